// SPDX-License-Identifier: MIT
/*
 * test_kv_cache.c — the paged-KV block manager against a shadow KV pool.
 *
 * The test plays the backend: whenever a sequence "computes" positions, it
 * writes the token id of each position into a shadow copy of the block it
 * lands in (shadow[block][slot]).  A prefix hit is then checked against
 * what is really in the blocks taken (the shadow content must equal the
 * prompt), and every write checks, from the test's own view of the live
 * tables, that no other live sequence holds the block being written (the
 * "shared blocks are never written" invariant).  eng_kvc_check() runs after
 * every operation of the random walk.
 *
 * Also: hits on shared prefixes (alone and concurrently), the cap that
 * leaves one prompt token to compute, forced hash collisions through the
 * hash hook (constant hash; hash ignoring the parent), LRU eviction order
 * (oldest first, a hit refreshes, a released table's tail before its head),
 * exhaustion -> -ENOSPC with nothing changed, prefix cache off, argument
 * errors, and no allocation after init (malloc interposed).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../engine/core/kv_cache.h"
#include "alloc_count.h"

/* ---- helpers ---------------------------------------------------------- */

static uint64_t trng;

static uint32_t rnd(uint32_t n)
{
	trng ^= trng << 13;
	trng ^= trng >> 7;
	trng ^= trng << 17;
	return (uint32_t)((trng >> 11) % n);
}

static struct eng_kvc *mk(uint32_t n_blocks, uint32_t bt, bool prefix)
{
	struct eng_kvc_config c = {
		.n_blocks = n_blocks, .block_tokens = bt, .prefix_cache = prefix,
		.seed = 0x5eed,
	};
	struct eng_kvc *kvc = eng_kvc_init(&c);

	assert_non_null(kvc);
	return kvc;
}

static void check(const struct eng_kvc *kvc)
{
	const char *why = NULL;
	int rc = eng_kvc_check(kvc, &why);

	if (rc)
		fail_msg("eng_kvc_check: %s", why);
}

static uint64_t ctr(const struct eng_kvc *kvc, int i)
{
	return eng_kvc_counters(kvc)[i];
}

#define C(kvc, name) ctr(kvc, ENG_KVC_CTR_##name)

/* Shadow KV pool: the token id each slot was computed for. */
#define SH_BLOCKS 256
#define SH_BT 16
static uint32_t shadow[SH_BLOCKS][SH_BT];

/* Run a whole sequence: begin, reserve all, compute all, commit.  Return
 * the cached token count begin gave. */
static uint32_t run_seq(struct eng_kvc *kvc, struct eng_kvc_seq *s,
			const uint32_t *toks, uint32_t n)
{
	uint32_t bt = eng_kvc_block_tokens(kvc);
	int c = eng_kvc_seq_begin(kvc, s, toks, n);

	assert_true(c >= 0);
	for (uint32_t p = 0; p < (uint32_t)c; p++)
		assert_int_equal(shadow[s->blocks[p / bt]][p % bt], toks[p]);
	assert_int_equal(eng_kvc_seq_reserve(kvc, s, n), 0);
	for (uint32_t p = (uint32_t)c; p < n; p++)
		shadow[s->blocks[p / bt]][p % bt] = toks[p];
	assert_int_equal(eng_kvc_seq_commit(kvc, s, toks, n), 0);
	check(kvc);
	return (uint32_t)c;
}

/* ---- basic life and hits ---------------------------------------------- */

static void test_basic_hits(void **state)
{
	struct eng_kvc *kvc = mk(64, 16, true);
	uint32_t ta[8], tb[8], tc[8];
	struct eng_kvc_seq a, b, c;
	uint32_t p[100], q[100];

	(void)state;
	for (uint32_t i = 0; i < 100; i++) {
		p[i] = 1000 + i;
		q[i] = i < 40 ? p[i] : 5000 + i;	/* shares 2 full blocks + 8 */
	}
	eng_kvc_seq_init(&a, ta, 8);
	eng_kvc_seq_init(&b, tb, 8);
	eng_kvc_seq_init(&c, tc, 8);
	assert_true(eng_kvc_idle_ok(kvc));
	check(kvc);

	/* Cold: nothing cached. */
	assert_int_equal(run_seq(kvc, &a, p, 70), 0);
	assert_int_equal(a.n_blocks, 5);
	assert_int_equal(a.n_tokens, 70);
	assert_int_equal(C(kvc, registered), 4);	/* 4 full blocks */
	assert_int_equal(C(kvc, blocks_used), 5);
	assert_false(eng_kvc_idle_ok(kvc));

	/* While a is live, b shares 2 blocks (q equals p on 40 tokens). */
	assert_int_equal(eng_kvc_prefix_probe(kvc, q, 100), 32);
	assert_int_equal(run_seq(kvc, &b, q, 100), 32);
	assert_int_equal(b.n_cached, 32);
	assert_int_equal(b.blocks[0], a.blocks[0]);
	assert_int_equal(b.blocks[1], a.blocks[1]);
	assert_int_not_equal(b.blocks[2], a.blocks[2]);
	assert_int_equal(C(kvc, hit_blocks), 2);
	assert_int_equal(C(kvc, hit_tokens), 32);
	assert_int_equal(C(kvc, blocks_used), 5 + 5);

	/* The cap: a prompt of exactly 64 tokens, all 4 blocks cached, takes
	 * only 3 (one token left to compute). */
	assert_int_equal(eng_kvc_prefix_probe(kvc, p, 64), 48);
	assert_int_equal(eng_kvc_prefix_probe(kvc, p, 65), 64);
	assert_int_equal(eng_kvc_prefix_probe(kvc, p, 1), 0);

	eng_kvc_seq_release(kvc, &a);
	check(kvc);
	/* a's 4 registered blocks: 2 still used by b, 2 cached; 1 free. */
	assert_int_equal(C(kvc, blocks_cached), 2);
	eng_kvc_seq_release(kvc, &b);
	check(kvc);
	assert_true(eng_kvc_idle_ok(kvc));
	/* b registered 4 more full blocks (its blocks 2..5) besides the two
	 * shared ones it hit. */
	assert_int_equal(C(kvc, registered), 8);
	assert_int_equal(C(kvc, blocks_cached), 8);

	/* Warm, after release: the whole prefix comes back. */
	assert_int_equal(run_seq(kvc, &c, p, 70), 64);
	eng_kvc_seq_release(kvc, &c);
	/* Release twice is a no-op. */
	eng_kvc_seq_release(kvc, &c);
	check(kvc);
	assert_true(eng_kvc_idle_ok(kvc));
	assert_int_equal(C(kvc, blocks_free) + C(kvc, blocks_cached), 64);
	eng_kvc_fini(kvc);
}

/* Incremental prefill and decode: commit registers blocks as they fill,
 * a second sequence hits what the first has committed so far. */
static void test_incremental_commit(void **state)
{
	struct eng_kvc *kvc = mk(32, 4, true);
	uint32_t ta[16], tb[16], toks[40];
	struct eng_kvc_seq a, b;
	uint32_t pos = 0;

	(void)state;
	for (uint32_t i = 0; i < 40; i++)
		toks[i] = 7 * i + 3;
	eng_kvc_seq_init(&a, ta, 16);
	eng_kvc_seq_init(&b, tb, 16);
	assert_int_equal(eng_kvc_seq_begin(kvc, &a, toks, 10), 0);
	/* Chunked prefill of 10 tokens in chunks of 3, then decode to 30. */
	while (pos < 30) {
		uint32_t step = pos < 10 ? (10 - pos < 3 ? 10 - pos : 3) : 1;

		assert_int_equal(eng_kvc_seq_reserve(kvc, &a, pos + step), 0);
		assert_int_equal(a.n_blocks, (pos + step + 3) / 4);
		assert_int_equal(eng_kvc_seq_commit(kvc, &a, toks, pos + step), 0);
		pos += step;
		assert_int_equal(C(kvc, registered), pos / 4);
		check(kvc);
	}
	/* b sees every full block of a (capped at n - 1 tokens). */
	assert_int_equal(eng_kvc_seq_begin(kvc, &b, toks, 40), 28);
	check(kvc);
	eng_kvc_seq_release(kvc, &a);
	eng_kvc_seq_release(kvc, &b);
	check(kvc);
	assert_true(eng_kvc_idle_ok(kvc));
	eng_kvc_fini(kvc);
}

/* ---- collisions -------------------------------------------------------- */

static uint64_t hash_const(const uint32_t *t, uint32_t n, uint64_t parent)
{
	(void)t;
	(void)n;
	(void)parent;
	return 42;
}

/* Ignores the parent: equal blocks after different prefixes collide. */
static uint64_t hash_no_parent(const uint32_t *t, uint32_t n, uint64_t parent)
{
	uint64_t h = 1469598103934665603ull;

	(void)parent;
	for (uint32_t i = 0; i < n; i++)
		h = (h ^ t[i]) * 1099511628211ull;
	return h;
}

static void test_collisions(void **state)
{
	struct eng_kvc *kvc = mk(32, 4, true);
	uint32_t tab[8];
	struct eng_kvc_seq s;
	uint32_t x[9] = { 1, 2, 3, 4, 5, 6, 7, 8, 99 };
	uint32_t y[9] = { 9, 9, 9, 9, 5, 6, 7, 8, 99 };
	uint32_t z[9] = { 1, 2, 3, 4, 9, 9, 9, 9, 99 };

	(void)state;
	eng_kvc_seq_init(&s, tab, 8);

	/* Constant hash: x's block 0 registers, block 1 collides with it. */
	eng_kvc_test_hash_hook(kvc, hash_const);
	assert_int_equal(run_seq(kvc, &s, x, 9), 0);
	assert_int_equal(C(kvc, registered), 1);
	assert_int_equal(C(kvc, collisions), 1);
	eng_kvc_seq_release(kvc, &s);
	check(kvc);
	/* y: same hash as x's block 0, other tokens: no hit. */
	assert_int_equal(run_seq(kvc, &s, y, 9), 0);
	assert_int_equal(C(kvc, collisions), 1 + 1 + 2);
	eng_kvc_seq_release(kvc, &s);
	/* z: block 0 is x's (a true hit), block 1 collides: 4 tokens only. */
	assert_int_equal(run_seq(kvc, &s, z, 9), 4);
	eng_kvc_seq_release(kvc, &s);
	check(kvc);
	/* x again: block 0 hits, block 1's hash finds x's block 0, whose
	 * parent and tokens differ: stops at 4, no false hit. */
	assert_int_equal(eng_kvc_prefix_probe(kvc, x, 9), 4);

	/* Parent-blind hash: y's block 1 equals x's block 1 in tokens but
	 * follows another prefix.  The parent check refuses it. */
	eng_kvc_fini(kvc);
	kvc = mk(32, 4, true);
	eng_kvc_test_hash_hook(kvc, hash_no_parent);
	assert_int_equal(run_seq(kvc, &s, x, 9), 0);
	eng_kvc_seq_release(kvc, &s);
	assert_int_equal(C(kvc, registered), 2);
	assert_int_equal(eng_kvc_prefix_probe(kvc, x, 9), 8);
	assert_int_equal(eng_kvc_prefix_probe(kvc, y, 9), 0);
	assert_int_equal(run_seq(kvc, &s, y, 9), 0);
	/* y's block 0 registered; its block 1 has x's block 1's hash. */
	assert_int_equal(C(kvc, registered), 3);
	assert_int_equal(C(kvc, collisions), 1);
	eng_kvc_seq_release(kvc, &s);
	/* y again: block 0 hits, block 1 finds x's block 1 under the same
	 * hash, same tokens, other parent: not taken. */
	assert_int_equal(eng_kvc_prefix_probe(kvc, y, 9), 4);
	check(kvc);
	eng_kvc_test_hash_hook(kvc, NULL);
	eng_kvc_fini(kvc);
}

/* ---- LRU ------------------------------------------------------------------ */

static void test_lru_order(void **state)
{
	/* 6 blocks of 4 tokens; sequences of 5 tokens: 1 full + 1 partial. */
	struct eng_kvc *kvc = mk(6, 4, true);
	uint32_t tab[8];
	struct eng_kvc_seq s, big;
	uint32_t A[5] = { 1, 1, 1, 1, 0 }, B[5] = { 2, 2, 2, 2, 0 },
		 Cc[5] = { 3, 3, 3, 3, 0 }, D[13];
	uint32_t btab[8];

	(void)state;
	eng_kvc_seq_init(&s, tab, 8);
	eng_kvc_seq_init(&big, btab, 8);
	run_seq(kvc, &s, A, 5);
	eng_kvc_seq_release(kvc, &s);
	run_seq(kvc, &s, B, 5);
	eng_kvc_seq_release(kvc, &s);
	run_seq(kvc, &s, Cc, 5);
	eng_kvc_seq_release(kvc, &s);
	/* 3 cached (A, B, C full blocks), 3 free.  Refresh A: hit + release. */
	assert_int_equal(run_seq(kvc, &s, A, 5), 4);
	eng_kvc_seq_release(kvc, &s);
	assert_int_equal(C(kvc, blocks_cached), 3);
	assert_int_equal(C(kvc, blocks_free), 3);

	/* Take 4 fresh blocks: 3 free, then one eviction: B (the oldest). */
	for (uint32_t i = 0; i < 13; i++)
		D[i] = 100 + i;
	assert_int_equal(eng_kvc_seq_begin(kvc, &big, D, 13), 0);
	assert_int_equal(eng_kvc_seq_reserve(kvc, &big, 13), 0);
	assert_int_equal(eng_kvc_seq_reserve(kvc, &big, 16), 0);
	assert_int_equal(C(kvc, evictions), 1);
	check(kvc);
	assert_int_equal(eng_kvc_prefix_probe(kvc, B, 5), 0);
	assert_int_equal(eng_kvc_prefix_probe(kvc, A, 5), 4);
	assert_int_equal(eng_kvc_prefix_probe(kvc, Cc, 5), 4);
	/* One more: C goes (A was refreshed after it). */
	assert_int_equal(eng_kvc_seq_reserve(kvc, &big, 20), 0);
	assert_int_equal(eng_kvc_prefix_probe(kvc, Cc, 5), 0);
	assert_int_equal(eng_kvc_prefix_probe(kvc, A, 5), 4);
	eng_kvc_seq_release(kvc, &big);
	check(kvc);
	eng_kvc_fini(kvc);

	/* Tail before head: a released 3-block prefix loses its last block
	 * first, then the middle, then the first. */
	kvc = mk(4, 4, true);
	{
		uint32_t P[13] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13 };
		uint32_t Q[13] = { 0 };
		uint32_t want[] = { 12, 8, 4, 0 };

		run_seq(kvc, &s, P, 13);	/* 3 full + 1 partial = 4 blocks */
		eng_kvc_seq_release(kvc, &s);
		assert_int_equal(C(kvc, blocks_free), 1);
		assert_int_equal(eng_kvc_prefix_probe(kvc, P, 13), 12);
		assert_int_equal(eng_kvc_seq_begin(kvc, &big, Q, 13), 0);
		for (uint32_t i = 0; i < 4; i++) {
			assert_int_equal(eng_kvc_seq_reserve(kvc, &big, 4 * (i + 1)), 0);
			assert_int_equal(eng_kvc_prefix_probe(kvc, P, 13), want[i]);
			check(kvc);
		}
		eng_kvc_seq_release(kvc, &big);
	}
	eng_kvc_fini(kvc);
}

/* ---- exhaustion -------------------------------------------------------- */

static void test_exhaustion(void **state)
{
	struct eng_kvc *kvc = mk(8, 4, true);
	uint32_t ta[16], tb[16], tc[2], toks[64];
	struct eng_kvc_seq a, b, c;
	uint64_t before[ENG_KVC_CTR__COUNT];
	struct eng_kvc_seq bcopy;
	uint32_t tbcopy[16];

	(void)state;
	for (uint32_t i = 0; i < 64; i++)
		toks[i] = i;
	eng_kvc_seq_init(&a, ta, 16);
	eng_kvc_seq_init(&b, tb, 16);
	eng_kvc_seq_init(&c, tc, 2);
	assert_int_equal(eng_kvc_seq_begin(kvc, &a, toks, 20), 0);
	assert_int_equal(eng_kvc_seq_reserve(kvc, &a, 20), 0);	/* 5 blocks */
	assert_int_equal(eng_kvc_seq_begin(kvc, &b, toks + 32, 8), 0);
	assert_int_equal(eng_kvc_seq_reserve(kvc, &b, 8), 0);	/* 2 blocks */
	assert_int_equal(eng_kvc_blocks_available(kvc), 1);

	/* b wants 3 more blocks, 1 exists: refused, nothing changed. */
	memcpy(before, eng_kvc_counters(kvc), sizeof(before));
	bcopy = b;
	memcpy(tbcopy, tb, sizeof(tb));
	assert_int_equal(eng_kvc_seq_reserve(kvc, &b, 20), -ENOSPC);
	assert_int_equal(C(kvc, reserve_fail), before[ENG_KVC_CTR_reserve_fail] + 1);
	before[ENG_KVC_CTR_reserve_fail]++;
	assert_memory_equal(before, eng_kvc_counters(kvc), sizeof(before));
	assert_memory_equal(&bcopy, &b, sizeof(b));
	assert_memory_equal(tbcopy, tb, sizeof(tb));
	check(kvc);
	/* Exactly the last block is fine. */
	assert_int_equal(eng_kvc_seq_reserve(kvc, &b, 12), 0);
	assert_int_equal(eng_kvc_blocks_available(kvc), 0);
	assert_int_equal(eng_kvc_seq_reserve(kvc, &b, 13), -ENOSPC);
	/* Table cap: -E2BIG, nothing changed. */
	assert_int_equal(eng_kvc_seq_begin(kvc, &c, toks, 4), 0);
	assert_int_equal(eng_kvc_seq_reserve(kvc, &c, 9), -E2BIG);
	assert_int_equal(c.n_blocks, 0);
	/* Preemption: a computed its 5 blocks, all full; released, they
	 * are cached (0 free), and b's reserve evicts 2 of them. */
	assert_int_equal(eng_kvc_seq_commit(kvc, &a, toks, 20), 0);
	eng_kvc_seq_release(kvc, &a);
	assert_int_equal(C(kvc, blocks_free), 0);
	assert_int_equal(C(kvc, blocks_cached), 5);
	assert_int_equal(eng_kvc_blocks_available(kvc), 5);
	assert_int_equal(C(kvc, evictions), 0);
	assert_int_equal(eng_kvc_seq_reserve(kvc, &b, 20), 0);
	assert_int_equal(C(kvc, evictions), 2);
	check(kvc);
	/* a's tail went first: its first 3 blocks are still a prefix. */
	assert_int_equal(eng_kvc_prefix_probe(kvc, toks, 20), 12);
	assert_int_equal(eng_kvc_seq_reserve(kvc, &b, 32), 0);
	assert_int_equal(C(kvc, evictions), 5);
	assert_int_equal(eng_kvc_seq_reserve(kvc, &b, 33), -ENOSPC);
	check(kvc);
	eng_kvc_seq_release(kvc, &b);
	eng_kvc_seq_release(kvc, &c);
	assert_true(eng_kvc_idle_ok(kvc));
	eng_kvc_fini(kvc);
}

/* ---- arguments, prefix cache off ------------------------------------------ */

static void test_args_and_off(void **state)
{
	struct eng_kvc_config bad = { .n_blocks = 0 };
	struct eng_kvc *kvc;
	uint32_t tab[4], toks[40] = { 0 };
	struct eng_kvc_seq s;

	(void)state;
	errno = 0;
	assert_null(eng_kvc_init(&bad));
	assert_int_equal(errno, EINVAL);
	bad.n_blocks = 4;
	bad.block_tokens = ENG_KV_BLOCK_TOKENS_MAX + 1;
	assert_null(eng_kvc_init(&bad));
	assert_null(eng_kvc_init(NULL));
	bad.block_tokens = 0;
	kvc = eng_kvc_init(&bad);
	assert_non_null(kvc);
	assert_int_equal(eng_kvc_block_tokens(kvc), ENG_KV_BLOCK_TOKENS_DEFAULT);
	eng_kvc_fini(kvc);

	kvc = mk(16, 4, false);
	eng_kvc_seq_init(&s, tab, 4);
	assert_int_equal(eng_kvc_seq_reserve(kvc, &s, 4), -EINVAL);	/* not live */
	assert_int_equal(eng_kvc_seq_commit(kvc, &s, toks, 0), -EINVAL);
	assert_int_equal(eng_kvc_seq_begin(kvc, &s, toks, 0), -EINVAL);
	assert_int_equal(eng_kvc_seq_begin(kvc, &s, toks, 9), 0);
	assert_int_equal(eng_kvc_seq_begin(kvc, &s, toks, 9), -EBUSY);
	assert_int_equal(eng_kvc_seq_reserve(kvc, &s, 9), 0);
	assert_int_equal(eng_kvc_seq_commit(kvc, &s, toks, 13), -EINVAL); /* past table */
	assert_int_equal(eng_kvc_seq_commit(kvc, &s, toks, 9), 0);
	assert_int_equal(eng_kvc_seq_commit(kvc, &s, toks, 8), -EINVAL); /* backwards */
	assert_int_equal(eng_kvc_seq_reserve(kvc, &s, 4), 0);		/* no shrink */
	assert_int_equal(s.n_blocks, 3);
	eng_kvc_seq_release(kvc, &s);
	check(kvc);
	/* Off: nothing is registered, nothing hits, blocks go back free. */
	assert_int_equal(run_seq(kvc, &s, toks, 9), 0);
	assert_int_equal(C(kvc, registered), 0);
	eng_kvc_seq_release(kvc, &s);
	assert_int_equal(C(kvc, blocks_free), 16);
	assert_int_equal(eng_kvc_prefix_probe(kvc, toks, 9), 0);
	assert_true(C(kvc, bad_args) >= 6);
	eng_kvc_fini(kvc);
}

/* ---- random walk ----------------------------------------------------------- */

#define RW_SEQS 12
#define RW_LEN 96

struct rw_seq {
	struct eng_kvc_seq s;
	uint32_t tab[RW_LEN / 4 + 1];
	uint32_t toks[RW_LEN];
	uint32_t n;			/* tokens the request will reach */
	uint32_t n_prompt;
};

/* Does another live sequence of the walk hold block @b? */
static bool held_by_other(const struct rw_seq *rs, int self, uint32_t b)
{
	for (int j = 0; j < RW_SEQS; j++) {
		if (j == self || !rs[j].s.live)
			continue;
		for (uint32_t i = 0; i < rs[j].s.n_blocks; i++)
			if (rs[j].s.blocks[i] == b)
				return true;
	}
	return false;
}

static void random_walk(uint64_t seed, uint32_t n_blocks, uint32_t bt,
			bool prefix, int ops)
{
	static struct rw_seq rs[RW_SEQS];
	struct eng_kvc *kvc = mk(n_blocks, bt, prefix);
	uint32_t prefixes[4][RW_LEN];
	uint64_t hits = 0, enospc = 0;

	trng = seed;
	for (int k = 0; k < 4; k++)
		for (int i = 0; i < RW_LEN; i++)
			prefixes[k][i] = (uint32_t)(k * 1000 + i);
	memset(rs, 0, sizeof(rs));
	for (int j = 0; j < RW_SEQS; j++)
		eng_kvc_seq_init(&rs[j].s, rs[j].tab, RW_LEN / bt + 1);

	for (int op = 0; op < ops; op++) {
		int j = (int)rnd(RW_SEQS);
		struct rw_seq *r = &rs[j];
		struct eng_kvc_seq *s = &r->s;

		if (!s->live) {
			/* New request: one of 4 prompt families, a shared
			 * part of random length, then a random tail. */
			uint32_t fam = rnd(4), shared = rnd(RW_LEN);
			int c;

			r->n = 1 + rnd(RW_LEN);
			r->n_prompt = 1 + rnd(r->n);
			for (uint32_t i = 0; i < r->n; i++)
				r->toks[i] = i < shared ? prefixes[fam][i]
							: 50000 + rnd(3);
			c = eng_kvc_seq_begin(kvc, s, r->toks, r->n_prompt);
			assert_true(c >= 0 && (uint32_t)c < r->n_prompt);
			assert_int_equal((uint32_t)c % bt, 0);
			if (!prefix)
				assert_int_equal(c, 0);
			/* What the hit blocks hold is the prompt. */
			for (uint32_t p = 0; p < (uint32_t)c; p++)
				assert_int_equal(shadow[s->blocks[p / bt]][p % bt],
						 r->toks[p]);
			hits += (uint32_t)c;
		} else if (rnd(8) == 0 || s->n_tokens >= r->n) {
			/* Finish, cancel or preemption. */
			eng_kvc_seq_release(kvc, s);
		} else {
			/* A step: the rest of the prompt in chunks, or 1. */
			uint32_t pos = s->n_tokens, step;

			step = pos < r->n_prompt ? 1 + rnd(r->n_prompt - pos) : 1;
			if (pos + step > r->n)
				step = r->n - pos;
			if (eng_kvc_seq_reserve(kvc, s, pos + step) == -ENOSPC) {
				enospc++;
				/* Preempt: release the longest other one. */
				int v = -1;

				for (int k = 0; k < RW_SEQS; k++)
					if (k != j && rs[k].s.live &&
					    (v < 0 || rs[k].s.n_blocks >
							      rs[v].s.n_blocks))
						v = k;
				if (v >= 0)
					eng_kvc_seq_release(kvc, &rs[v].s);
				else
					eng_kvc_seq_release(kvc, s);
				check(kvc);
				continue;
			}
			for (uint32_t p = pos; p < pos + step; p++) {
				uint32_t b = s->blocks[p / bt];

				/* The backend writes only unshared blocks. */
				assert_false(held_by_other(rs, j, b));
				shadow[b][p % bt] = r->toks[p];
			}
			assert_int_equal(eng_kvc_seq_commit(kvc, s, r->toks,
							    pos + step), 0);
		}
		check(kvc);
	}
	for (int j = 0; j < RW_SEQS; j++)
		eng_kvc_seq_release(kvc, &rs[j].s);
	check(kvc);
	assert_true(eng_kvc_idle_ok(kvc));
	if (prefix)
		assert_true(hits > 0);
	(void)enospc;
	eng_kvc_fini(kvc);
}

static void test_random_walk(void **state)
{
	(void)state;
	/* Roomy pool (hits dominate) and a tight one (evictions, -ENOSPC
	 * and preemption dominate), several block sizes. */
	for (uint64_t seed = 1; seed <= 4; seed++) {
		random_walk(seed * 0x9e3779b97f4a7c15ull, 256, 4, true, 3000);
		random_walk(seed * 0x2545f4914f6cdd1dull, 30, 4, true, 3000);
		random_walk(seed * 0x1234567ull + 1, 40, 16, true, 3000);
		random_walk(seed * 0x7777ull + 3, 24, 8, false, 1500);
	}
}

/* ---- no allocation after init ------------------------------------------------ */

static void test_no_alloc(void **state)
{
	struct eng_kvc *kvc;
	uint32_t ta[8], tb[8], toks[30];
	struct eng_kvc_seq a, b;
	unsigned long n;

	(void)state;
	if (!alloc_count_supported())
		skip();
	kvc = mk(16, 4, true);
	for (uint32_t i = 0; i < 30; i++)
		toks[i] = i * 3;
	eng_kvc_seq_init(&a, ta, 8);
	eng_kvc_seq_init(&b, tb, 8);
	alloc_count_start();
	for (int round = 0; round < 50; round++) {
		eng_kvc_seq_begin(kvc, &a, toks, 30);
		eng_kvc_seq_reserve(kvc, &a, 30);
		eng_kvc_seq_commit(kvc, &a, toks, 30);
		eng_kvc_seq_begin(kvc, &b, toks, 30);
		eng_kvc_seq_reserve(kvc, &b, 32);
		eng_kvc_seq_reserve(kvc, &b, 64);	/* -ENOSPC at times */
		eng_kvc_prefix_probe(kvc, toks, 30);
		eng_kvc_check(kvc, NULL);
		eng_kvc_seq_release(kvc, &a);
		eng_kvc_seq_release(kvc, &b);
	}
	n = alloc_count_stop();
	assert_int_equal(n, 0);
	check(kvc);
	eng_kvc_fini(kvc);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_basic_hits),
		cmocka_unit_test(test_incremental_commit),
		cmocka_unit_test(test_collisions),
		cmocka_unit_test(test_lru_order),
		cmocka_unit_test(test_exhaustion),
		cmocka_unit_test(test_args_and_off),
		cmocka_unit_test(test_random_walk),
		cmocka_unit_test(test_no_alloc),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
