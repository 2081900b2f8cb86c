// SPDX-License-Identifier: MIT
/*
 * kv_cache.c — see kv_cache.h.  Everything runs on the scheduler thread
 * between steps; every operation is O(blocks it touches) plus, per full
 * block hashed or looked up, one XXH3 over block_tokens x 4 bytes (~10 ns
 * for 16 tokens) and a short linear probe in a table at most half full.
 * Measured on the 2-core development VM (65536 blocks of 16 tokens):
 * a cold 1024-token prompt (begin, reserve 64 blocks, commit registering
 * 64, release) 12.5 us; the same prompt hitting all 64 blocks 3.0 us;
 * decode reserve + commit ~10 ns per token; eng_kvc_check() 10 ms.
 *
 * Memory (one allocation at init, per block):
 *   ref         4   refcount
 *   reg         1   registered in the prefix cache
 *   hash        8   its chained hash (valid while registered)
 *   parent      8   the hash of its parent prefix (collision check)
 *   lru prev/next 8 doubly linked LRU of CACHED blocks
 *   free stack  4
 *   check       4   scratch of eng_kvc_check()
 *   hash table  8   (2 buckets of 4 bytes: load <= 1/2)
 *   tokens      4 x block_tokens (prefix cache only)
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include <velo/compiler.h>

#include "kv_cache.h"

const struct ctr_desc eng_kvc_ctr_desc[] = {
	foreach_eng_kvc_counter(CTR_DESC)
};
_Static_assert(sizeof(eng_kvc_ctr_desc) / sizeof(eng_kvc_ctr_desc[0]) ==
	       ENG_KVC_CTR__COUNT, "one description per counter");

struct eng_kvc {
	uint32_t n;			/* blocks */
	uint32_t bt;			/* tokens per block */
	bool prefix;
	uint64_t seed;
	eng_kvc_hash_fn hash_fn;

	uint32_t *ref;			/* (n) */
	uint8_t *reg;			/* (n) */
	uint64_t *hash;			/* (n) */
	uint64_t *parent;		/* (n) */
	uint32_t *tokens;		/* (n, bt), prefix cache only */
	uint32_t *lru_prev, *lru_next;	/* (n) */
	uint32_t lru_head, lru_tail;	/* head: least recently used */
	uint32_t *free_stack;		/* (n) */
	uint32_t n_free;
	uint32_t *chk;			/* (n) scratch of eng_kvc_check */
	uint32_t *ht;			/* (ht_mask + 1) block or NONE */
	uint32_t ht_mask;
	uint32_t n_reg;			/* registered blocks */
	struct eng_kvc_seq *live;	/* live sequences */

	uint64_t ctr[ENG_KVC_CTR__COUNT];
	void *mem;
};

#define CTR(kvc, name) ((kvc)->ctr[ENG_KVC_CTR_##name])

static uint64_t hash_xxh3(const uint32_t *tokens, uint32_t n, uint64_t parent)
{
	return XXH3_64bits_withSeed(tokens, (size_t)n * sizeof(*tokens), parent);
}

/* ---- init -------------------------------------------------------------- */

static size_t align8(size_t x)
{
	return (x + 7) & ~(size_t)7;
}

struct eng_kvc *eng_kvc_init(const struct eng_kvc_config *cfg)
{
	struct eng_kvc *kvc;
	uint32_t n, bt, ht_n;
	size_t off, len;
	char *m;

	if (!cfg || cfg->n_blocks == 0 || cfg->n_blocks > ENG_KVC_BLOCKS_MAX ||
	    cfg->block_tokens > ENG_KV_BLOCK_TOKENS_MAX) {
		errno = EINVAL;
		return NULL;
	}
	n = cfg->n_blocks;
	bt = cfg->block_tokens ? cfg->block_tokens : ENG_KV_BLOCK_TOKENS_DEFAULT;
	/* Power of two >= 2n: linear probing at load <= 1/2 stays short. */
	for (ht_n = 2; ht_n < 2 * n; ht_n <<= 1)
		;

	kvc = calloc(1, sizeof(*kvc));
	if (!kvc)
		goto err;
	/* One allocation, laid out 8-byte aligned arrays in a row. */
	len = 0;
	len += align8((size_t)n * 8);			/* hash */
	len += align8((size_t)n * 8);			/* parent */
	len += align8((size_t)n * 4) * 6;		/* ref lru x2 free chk, tokens below */
	len += align8((size_t)n);			/* reg */
	len += align8((size_t)ht_n * 4);		/* ht */
	if (cfg->prefix_cache)
		len += align8((size_t)n * bt * 4);	/* tokens */
	kvc->mem = malloc(len);
	if (!kvc->mem)
		goto err_free_kvc;
	m = kvc->mem;
	off = 0;
#define TAKE(ptr, bytes)                                                      \
	do {                                                                  \
		(ptr) = (void *)(m + off);                                    \
		off += align8(bytes);                                         \
	} while (0)
	TAKE(kvc->hash, (size_t)n * 8);
	TAKE(kvc->parent, (size_t)n * 8);
	TAKE(kvc->ref, (size_t)n * 4);
	TAKE(kvc->lru_prev, (size_t)n * 4);
	TAKE(kvc->lru_next, (size_t)n * 4);
	TAKE(kvc->free_stack, (size_t)n * 4);
	TAKE(kvc->chk, (size_t)n * 4);
	TAKE(kvc->reg, (size_t)n);
	TAKE(kvc->ht, (size_t)ht_n * 4);
	if (cfg->prefix_cache)
		TAKE(kvc->tokens, (size_t)n * bt * 4);
#undef TAKE
	VERIFY(off <= len);
	/* Touch every page now, not in the first step. */
	memset(kvc->mem, 0, len);
	memset(kvc->ht, 0xff, (size_t)ht_n * 4);

	kvc->n = n;
	kvc->bt = bt;
	kvc->prefix = cfg->prefix_cache;
	kvc->seed = cfg->seed;
	kvc->hash_fn = hash_xxh3;
	kvc->ht_mask = ht_n - 1;
	kvc->lru_head = kvc->lru_tail = ENG_KVC_NONE;
	/* Block 0 on top of the stack: handed out in index order at first. */
	for (uint32_t i = 0; i < n; i++) {
		kvc->free_stack[i] = n - 1 - i;
		kvc->lru_prev[i] = kvc->lru_next[i] = ENG_KVC_NONE;
	}
	kvc->n_free = n;
	CTR(kvc, blocks_total) = n;
	CTR(kvc, blocks_free) = n;
	return kvc;

err_free_kvc:
	free(kvc);
err:
	errno = ENOMEM;
	return NULL;
}

void eng_kvc_fini(struct eng_kvc *kvc)
{
	if (!kvc)
		return;
	free(kvc->mem);
	free(kvc);
}

uint32_t eng_kvc_block_tokens(const struct eng_kvc *kvc)
{
	return kvc->bt;
}

uint32_t eng_kvc_blocks_total(const struct eng_kvc *kvc)
{
	return kvc->n;
}

uint32_t eng_kvc_blocks_available(const struct eng_kvc *kvc)
{
	return kvc->n_free + (uint32_t)CTR(kvc, blocks_cached);
}

const uint64_t *eng_kvc_counters(const struct eng_kvc *kvc)
{
	return kvc->ctr;
}

void eng_kvc_test_hash_hook(struct eng_kvc *kvc, eng_kvc_hash_fn fn)
{
	kvc->hash_fn = fn ? fn : hash_xxh3;
}

/* ---- LRU of cached blocks ---------------------------------------------- */

static void lru_push_tail(struct eng_kvc *kvc, uint32_t b)
{
	kvc->lru_prev[b] = kvc->lru_tail;
	kvc->lru_next[b] = ENG_KVC_NONE;
	if (kvc->lru_tail != ENG_KVC_NONE)
		kvc->lru_next[kvc->lru_tail] = b;
	else
		kvc->lru_head = b;
	kvc->lru_tail = b;
}

static void lru_remove(struct eng_kvc *kvc, uint32_t b)
{
	uint32_t p = kvc->lru_prev[b], nx = kvc->lru_next[b];

	if (p != ENG_KVC_NONE)
		kvc->lru_next[p] = nx;
	else
		kvc->lru_head = nx;
	if (nx != ENG_KVC_NONE)
		kvc->lru_prev[nx] = p;
	else
		kvc->lru_tail = p;
	kvc->lru_prev[b] = kvc->lru_next[b] = ENG_KVC_NONE;
}

/* ---- hash table: linear probing, one entry per hash value --------------- */

static uint32_t ht_find(const struct eng_kvc *kvc, uint64_t h)
{
	uint32_t i = (uint32_t)h & kvc->ht_mask, b;

	/* Bounded: the table is at most half full, so an empty bucket comes. */
	while ((b = kvc->ht[i]) != ENG_KVC_NONE) {
		if (kvc->hash[b] == h)
			return b;
		i = (i + 1) & kvc->ht_mask;
	}
	return ENG_KVC_NONE;
}

/* Insert block @b under kvc->hash[b]; the caller checked it is absent. */
static void ht_insert(struct eng_kvc *kvc, uint32_t b)
{
	uint32_t i = (uint32_t)kvc->hash[b] & kvc->ht_mask;

	while (kvc->ht[i] != ENG_KVC_NONE)
		i = (i + 1) & kvc->ht_mask;
	kvc->ht[i] = b;
}

/* Remove block @b: backward-shift deletion (no tombstones, so probes stay
 * as short as the live entries make them). */
static void ht_remove(struct eng_kvc *kvc, uint32_t b)
{
	uint32_t mask = kvc->ht_mask;
	uint32_t i = (uint32_t)kvc->hash[b] & mask, j, home;

	while (kvc->ht[i] != b) {
		ASSERT(kvc->ht[i] != ENG_KVC_NONE);
		i = (i + 1) & mask;
	}
	j = i;
	for (;;) {
		j = (j + 1) & mask;
		if (kvc->ht[j] == ENG_KVC_NONE)
			break;
		home = (uint32_t)kvc->hash[kvc->ht[j]] & mask;
		/* The entry at j may fill the hole at i unless its home lies
		 * cyclically in (i, j]. */
		if (i <= j ? (i < home && home <= j) : (i < home || home <= j))
			continue;
		kvc->ht[i] = kvc->ht[j];
		i = j;
	}
	kvc->ht[i] = ENG_KVC_NONE;
}

/* ---- blocks ------------------------------------------------------------ */

/* A block for a sequence: free list first, else evict the LRU cached one.
 * The caller checked that one exists. */
static uint32_t block_take_fresh(struct eng_kvc *kvc)
{
	uint32_t b;

	if (kvc->n_free) {
		b = kvc->free_stack[--kvc->n_free];
		CTR(kvc, blocks_free)--;
	} else {
		b = kvc->lru_head;
		VERIFY(b != ENG_KVC_NONE);
		lru_remove(kvc, b);
		ht_remove(kvc, b);
		kvc->reg[b] = 0;
		kvc->n_reg--;
		CTR(kvc, blocks_cached)--;
		CTR(kvc, evictions)++;
	}
	ASSERT(kvc->ref[b] == 0 && !kvc->reg[b]);
	kvc->ref[b] = 1;
	CTR(kvc, blocks_used)++;
	return b;
}

/* Take a reference on a registered block found by a hit. */
static void block_take_cached(struct eng_kvc *kvc, uint32_t b)
{
	ASSERT(kvc->reg[b]);
	if (kvc->ref[b] == 0) {
		lru_remove(kvc, b);
		CTR(kvc, blocks_cached)--;
		CTR(kvc, blocks_used)++;
	}
	kvc->ref[b]++;
}

static void block_put(struct eng_kvc *kvc, uint32_t b)
{
	VERIFY(b < kvc->n && kvc->ref[b] > 0);
	if (--kvc->ref[b])
		return;
	CTR(kvc, blocks_used)--;
	if (kvc->reg[b]) {
		lru_push_tail(kvc, b);
		CTR(kvc, blocks_cached)++;
	} else {
		kvc->free_stack[kvc->n_free++] = b;
		CTR(kvc, blocks_free)++;
	}
}

/* Does registered block @b hold exactly @tokens after prefix @parent? */
static bool block_matches(const struct eng_kvc *kvc, uint32_t b,
			  const uint32_t *tokens, uint64_t parent)
{
	return kvc->parent[b] == parent &&
	       !memcmp(kvc->tokens + (size_t)b * kvc->bt, tokens,
		       (size_t)kvc->bt * sizeof(*tokens));
}

/*
 * Walk the prompt's full blocks through the cache.  With @seq, take each
 * block found into its table; without, only count.  Return: blocks found.
 */
static uint32_t prefix_walk(struct eng_kvc *kvc, struct eng_kvc_seq *seq,
			    const uint32_t *prompt, uint32_t n, uint32_t cap,
			    uint64_t *last_hash, bool count)
{
	uint32_t bt = kvc->bt, max_full, i;
	uint64_t h = kvc->seed, hi;

	/* At least one token left to compute: its logits are needed. */
	max_full = (n - 1) / bt;
	if (max_full > cap)
		max_full = cap;
	for (i = 0; i < max_full; i++) {
		const uint32_t *t = prompt + (size_t)i * bt;
		uint32_t b;

		hi = kvc->hash_fn(t, bt, h);
		b = ht_find(kvc, hi);
		if (b == ENG_KVC_NONE)
			break;
		if (!block_matches(kvc, b, t, h)) {
			if (count)
				CTR(kvc, collisions)++;
			break;
		}
		if (seq) {
			block_take_cached(kvc, b);
			seq->blocks[i] = b;
		}
		h = hi;
	}
	if (count) {
		CTR(kvc, hit_blocks) += i;
		CTR(kvc, hit_tokens) += (uint64_t)i * bt;
		CTR(kvc, miss_blocks) += max_full - i;
	}
	*last_hash = h;
	return i;
}

/* ---- sequences ----------------------------------------------------------- */

void eng_kvc_seq_init(struct eng_kvc_seq *seq, uint32_t *blocks, uint32_t cap)
{
	memset(seq, 0, sizeof(*seq));
	seq->blocks = blocks;
	seq->cap = cap;
}

int eng_kvc_seq_begin(struct eng_kvc *kvc, struct eng_kvc_seq *seq,
		      const uint32_t *prompt, uint32_t n)
{
	uint32_t found = 0;
	uint64_t h = 0;

	if (unlikely(!kvc || !seq || !prompt || n == 0 || !seq->blocks ||
		     seq->cap == 0)) {
		if (kvc)
			CTR(kvc, bad_args)++;
		return -EINVAL;
	}
	if (unlikely(seq->live)) {
		CTR(kvc, bad_args)++;
		return -EBUSY;
	}
	CTR(kvc, begins)++;
	if (kvc->prefix)
		found = prefix_walk(kvc, seq, prompt, n, seq->cap, &h, true);
	else
		h = kvc->seed;
	seq->n_blocks = found;
	seq->n_hashed = found;
	seq->n_tokens = found * kvc->bt;
	seq->n_cached = seq->n_tokens;
	seq->last_hash = h;
	seq->live = 1;
	seq->prev = NULL;
	seq->next = kvc->live;
	if (kvc->live)
		kvc->live->prev = seq;
	kvc->live = seq;
	CTR(kvc, seqs_live)++;
	return (int)seq->n_tokens;
}

uint32_t eng_kvc_prefix_probe(const struct eng_kvc *kvc,
			      const uint32_t *prompt, uint32_t n)
{
	uint64_t h;

	if (!kvc || !kvc->prefix || !prompt || n == 0)
		return 0;
	/* prefix_walk without a sequence and without counting only reads. */
	return prefix_walk((struct eng_kvc *)kvc, NULL, prompt, n, UINT32_MAX,
			   &h, false) * kvc->bt;
}

int eng_kvc_seq_reserve(struct eng_kvc *kvc, struct eng_kvc_seq *seq,
			uint32_t total_tokens)
{
	uint32_t need, add;

	if (unlikely(!kvc || !seq || !seq->live)) {
		if (kvc)
			CTR(kvc, bad_args)++;
		return -EINVAL;
	}
	need = eng_kv_blocks_for(total_tokens, kvc->bt);
	if (need <= seq->n_blocks)
		return 0;
	if (unlikely(need > seq->cap)) {
		CTR(kvc, bad_args)++;
		return -E2BIG;
	}
	add = need - seq->n_blocks;
	if (add > eng_kvc_blocks_available(kvc)) {
		CTR(kvc, reserve_fail)++;
		return -ENOSPC;
	}
	while (seq->n_blocks < need)
		seq->blocks[seq->n_blocks++] = block_take_fresh(kvc);
	return 0;
}

/* Register full block @i of @seq (hash @h after @parent), unless its prefix
 * is already cached (another sequence computed it too) or its hash is taken
 * by a different prefix (a collision: it stays private). */
static void block_register(struct eng_kvc *kvc, uint32_t b,
			   const uint32_t *t, uint64_t h, uint64_t parent)
{
	uint32_t e = ht_find(kvc, h);

	if (e != ENG_KVC_NONE) {
		if (block_matches(kvc, e, t, parent))
			CTR(kvc, dup_blocks)++;
		else
			CTR(kvc, collisions)++;
		return;
	}
	kvc->hash[b] = h;
	kvc->parent[b] = parent;
	memcpy(kvc->tokens + (size_t)b * kvc->bt, t,
	       (size_t)kvc->bt * sizeof(*t));
	kvc->reg[b] = 1;
	kvc->n_reg++;
	ht_insert(kvc, b);
	CTR(kvc, registered)++;
}

int eng_kvc_seq_commit(struct eng_kvc *kvc, struct eng_kvc_seq *seq,
		       const uint32_t *tokens, uint32_t n_computed)
{
	uint32_t bt, full;

	if (unlikely(!kvc || !seq || !seq->live || n_computed < seq->n_tokens ||
		     n_computed > (uint64_t)seq->n_blocks * kvc->bt ||
		     (!tokens && kvc->prefix))) {
		if (kvc)
			CTR(kvc, bad_args)++;
		return -EINVAL;
	}
	bt = kvc->bt;
	/* The invariant of kv_cache.h: the blocks this step wrote were
	 * private and unregistered (never a shared, full block). */
	if (IS_ENABLED(CONFIG_DEBUG_ASSERT) && n_computed > seq->n_tokens) {
		for (uint32_t i = seq->n_tokens / bt; i <= (n_computed - 1) / bt;
		     i++) {
			ASSERT(kvc->ref[seq->blocks[i]] == 1);
			ASSERT(!kvc->reg[seq->blocks[i]]);
		}
	}
	seq->n_tokens = n_computed;
	if (!kvc->prefix)
		return 0;
	full = n_computed / bt;
	while (seq->n_hashed < full) {
		const uint32_t *t = tokens + (size_t)seq->n_hashed * bt;
		uint64_t h = kvc->hash_fn(t, bt, seq->last_hash);

		block_register(kvc, seq->blocks[seq->n_hashed], t, h,
			       seq->last_hash);
		seq->last_hash = h;
		seq->n_hashed++;
	}
	return 0;
}

void eng_kvc_seq_release(struct eng_kvc *kvc, struct eng_kvc_seq *seq)
{
	if (!kvc || !seq || !seq->live)
		return;
	/* Tail first: its blocks reach the LRU before the head's, so a
	 * partial eviction keeps the shorter, more shared prefix. */
	for (uint32_t i = seq->n_blocks; i-- > 0;)
		block_put(kvc, seq->blocks[i]);
	if (seq->prev)
		seq->prev->next = seq->next;
	else
		kvc->live = seq->next;
	if (seq->next)
		seq->next->prev = seq->prev;
	seq->prev = seq->next = NULL;
	seq->live = 0;
	seq->n_blocks = 0;
	seq->n_tokens = 0;
	seq->n_hashed = 0;
	CTR(kvc, seqs_live)--;
}

/* ---- checks -------------------------------------------------------------- */

#define FAIL(msg)                                                             \
	do {                                                                  \
		if (why)                                                      \
			*why = (msg);                                         \
		return -EUCLEAN;                                              \
	} while (0)

int eng_kvc_check(const struct eng_kvc *kvc, const char **why)
{
	uint32_t *chk = kvc->chk, n = kvc->n, bt = kvc->bt;
	uint32_t n_used = 0, n_cached = 0, n_freeb = 0, n_live = 0, cnt;
	const struct eng_kvc_seq *s;

	/* References from the live tables. */
	memset(chk, 0, (size_t)n * sizeof(*chk));
	for (s = kvc->live; s; s = s->next) {
		if (++n_live > n + CTR(kvc, seqs_live))
			FAIL("live list loops");
		if (!s->live)
			FAIL("a listed sequence is not live");
		if (s->next && s->next->prev != s)
			FAIL("live list back link");
		if (s->n_blocks > s->cap)
			FAIL("table longer than its cap");
		if (s->n_tokens > (uint64_t)s->n_blocks * bt)
			FAIL("sequence computed past its table");
		if (s->n_cached > s->n_tokens || s->n_cached % bt)
			FAIL("cached count not whole blocks");
		if (kvc->prefix && s->n_hashed != s->n_tokens / bt)
			FAIL("hashed blocks differ from full blocks");
		for (uint32_t i = 0; i < s->n_blocks; i++) {
			uint32_t b = s->blocks[i];

			if (b >= n)
				FAIL("block index out of range");
			chk[b]++;
			/* Blocks that are not full yet will be written: they
			 * must be private and unregistered. */
			if (i >= s->n_tokens / bt &&
			    (kvc->ref[b] != 1 || kvc->reg[b]))
				FAIL("a block still to be written is shared or registered");
		}
	}
	if (n_live != CTR(kvc, seqs_live))
		FAIL("seqs_live gauge");
	for (uint32_t b = 0; b < n; b++) {
		if (chk[b] != kvc->ref[b])
			FAIL("refcount differs from the live tables");
		if (kvc->ref[b])
			n_used++;
		else if (kvc->reg[b])
			n_cached++;
		else
			n_freeb++;
		if (kvc->reg[b] && !kvc->prefix)
			FAIL("registered block without prefix cache");
	}
	if (n_used + n_cached + n_freeb != n)
		FAIL("free + used + cached != total");
	if (n_used != CTR(kvc, blocks_used) || n_cached != CTR(kvc, blocks_cached) ||
	    n_freeb != CTR(kvc, blocks_free) || n_freeb != kvc->n_free ||
	    n != CTR(kvc, blocks_total))
		FAIL("gauges differ from the block states");

	/* The free stack holds exactly the FREE blocks, once each (mark 1);
	 * the LRU exactly the CACHED ones, in a consistent list (mark 2). */
	memset(chk, 0, (size_t)n * sizeof(*chk));
	for (uint32_t i = 0; i < kvc->n_free; i++) {
		uint32_t b = kvc->free_stack[i];

		if (b >= n || chk[b])
			FAIL("free stack: bad or repeated block");
		if (kvc->ref[b] || kvc->reg[b])
			FAIL("free stack: block not free");
		chk[b] = 1;
	}
	cnt = 0;
	for (uint32_t b = kvc->lru_head, prev = ENG_KVC_NONE; b != ENG_KVC_NONE;
	     prev = b, b = kvc->lru_next[b]) {
		if (b >= n || chk[b] || ++cnt > n)
			FAIL("LRU: bad, repeated or looping block");
		if (kvc->lru_prev[b] != prev)
			FAIL("LRU: back link");
		if (kvc->ref[b] || !kvc->reg[b])
			FAIL("LRU: block not cached");
		if (kvc->lru_next[b] == ENG_KVC_NONE && kvc->lru_tail != b)
			FAIL("LRU: tail");
		chk[b] = 2;
	}
	if (cnt != n_cached)
		FAIL("LRU length differs from cached blocks");
	if (cnt == 0 && (kvc->lru_head != ENG_KVC_NONE ||
			 kvc->lru_tail != ENG_KVC_NONE))
		FAIL("LRU: empty list with ends");

	/* Hash table: every registered block is found under its hash, and the
	 * table holds nothing else. */
	cnt = 0;
	for (uint32_t i = 0; i <= kvc->ht_mask; i++) {
		uint32_t b = kvc->ht[i];

		if (b == ENG_KVC_NONE)
			continue;
		if (b >= n || !kvc->reg[b])
			FAIL("hash table: entry not registered");
		cnt++;
	}
	if (cnt != kvc->n_reg)
		FAIL("hash table: entry count");
	for (uint32_t b = 0; b < n; b++) {
		if (!kvc->reg[b]) {
			if (kvc->lru_prev[b] != ENG_KVC_NONE ||
			    kvc->lru_next[b] != ENG_KVC_NONE)
				FAIL("unregistered block linked in the LRU");
			continue;
		}
		if (ht_find(kvc, kvc->hash[b]) != b)
			FAIL("registered block not found under its hash");
	}
	return 0;
}

bool eng_kvc_idle_ok(const struct eng_kvc *kvc)
{
	return !kvc->live && CTR(kvc, blocks_used) == 0 &&
	       CTR(kvc, blocks_free) + CTR(kvc, blocks_cached) == kvc->n;
}
