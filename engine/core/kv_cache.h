/* SPDX-License-Identifier: MIT */
/*
 * kv_cache.h — the scheduler's paged-KV block manager: which block of the
 * backend's KV pool (core/kv.h) holds which positions of which sequence,
 * and the prefix cache that lets a new sequence reuse the blocks another
 * one computed for the same prompt prefix.
 *
 * The manager never touches KV data: it hands out block indices that the
 * scheduler puts into struct eng_seq_in.blocks, and the backend reads and
 * writes the blocks a step names.
 *
 * Blocks, each in exactly one state:
 *   FREE     on the free list: no sequence uses it, its content is garbage;
 *   USED     refcount >= 1: in the block table of that many live sequences;
 *   CACHED   refcount 0 but registered in the prefix cache: its content is
 *            still valid and a later sequence may take it (a hit); it sits
 *            on the LRU list and is evicted (becomes a sequence's fresh
 *            block) when the free list is empty.
 * A USED block may also be registered (it is then hittable while in use).
 *
 * Prefix cache.  A FULL block (block_tokens positions computed) of a
 * sequence is identified by a 64-bit chained hash
 *     h(i) = XXH3_64bits_withSeed(tokens of block i, h(i - 1)),
 *     h(-1) = the configuration's seed,
 * so equal hashes mean equal whole prefixes up to the end of the block.  On
 * a hit the stored token ids of the block and the stored parent hash are
 * compared too (kept in side arrays, n_blocks x block_tokens ids), so a
 * false hit needs a 64-bit collision of the chained hashes of two different
 * prefixes whose last blocks hold identical tokens.  A colliding block
 * (same hash, different content) is simply not registered (counted).
 *
 * INVARIANT: only full blocks are ever shared (taken by a hit), and a full
 * block is never written again, so shared blocks are read-only and no
 * copy-on-write (ops->kv_copy) is ever needed.  eng_kvc_seq_begin() caps a
 * hit so that at least one prompt token is left to compute, which keeps the
 * first position a step writes on a block boundary of a fresh block.  Every
 * block a sequence writes has refcount 1 and is not registered; commit()
 * asserts it (ASSERT) and eng_kvc_check() verifies it.
 *
 * Memory: everything is allocated by eng_kvc_init() from the block count
 * (about 40 + 4 x block_tokens bytes per block); no function allocates
 * after init.  Block tables are memory the caller gives (the scheduler's
 * request slots).
 *
 * Threads: none of it is thread-safe: one scheduler thread calls all of it.
 * The counters may be read by another thread (ctr_read()).
 *
 * Typical life of a request:
 *   eng_kvc_seq_init(&seq, table, cap)          once per request slot
 *   n = eng_kvc_seq_begin(kvc, &seq, prompt, n_prompt)   -> cached tokens
 *   loop: eng_kvc_seq_reserve(kvc, &seq, pos + n_step)    before a step
 *         ... ops->step(pos = seq.n_tokens, blocks = seq.blocks) ...
 *         eng_kvc_seq_commit(kvc, &seq, all_tokens, pos + n_step)
 *   eng_kvc_seq_release(kvc, &seq)   on finish, cancel or preemption
 * Preemption by recomputation: release, and later begin again with the
 * prompt plus the tokens generated so far (the prefix cache usually gives
 * most of it back).
 */
#ifndef VELO_ENG_KV_CACHE_H
#define VELO_ENG_KV_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kv.h"
#include "../../tools/lib/counters.h"

#define ENG_KVC_NONE UINT32_MAX		/* "no block" */
/* Blocks in one pool at most (indices stay below ENG_KVC_NONE; 2^28 so the
 * side arrays of the worst case stay addressable). */
#define ENG_KVC_BLOCKS_MAX (1u << 28)

struct eng_kvc_config {
	uint32_t n_blocks;		/* blocks in the pool (the backend's
					   kv_blocks), 1 .. ENG_KVC_BLOCKS_MAX */
	uint32_t block_tokens;		/* tokens per block, 1 ..
					   ENG_KV_BLOCK_TOKENS_MAX; 0: 16 */
	bool prefix_cache;		/* false: no sharing, no hashing; blocks
					   go straight back to the free list */
	uint64_t seed;			/* h(-1): differ per model version so
					   that hashes of different models never
					   mean the same thing (0 is fine) */
};

/*
 * One sequence's view: its block table (entry i holds positions
 * [i * block_tokens, (i + 1) * block_tokens)) and how far it is computed.
 * Lives in the caller's memory; the caller reads blocks, n_blocks and
 * n_tokens and leaves every field alone otherwise.
 */
struct eng_kvc_seq {
	uint32_t *blocks;		/* caller's array, [cap] */
	uint32_t n_blocks;		/* entries in use (reserved) */
	uint32_t cap;			/* entries the array holds */
	uint32_t n_tokens;		/* positions whose KV is computed: the
					   pos of this sequence's next step */
	uint32_t n_cached;		/* of which taken from the prefix cache
					   by the last begin (DONE's
					   cached_prompt_tokens) */
	/* private */
	uint32_t n_hashed;		/* leading blocks whose hash is known */
	uint32_t live;			/* between begin and release */
	uint64_t last_hash;		/* h(n_hashed - 1), or the seed */
	struct eng_kvc_seq *prev, *next; /* list of live sequences (check) */
};

struct eng_kvc;

/*
 * Counters and gauges of one manager (one uint64_t each, in this order;
 * register them with ctr_block_register(prefix, eng_kvc_ctr_desc,
 * eng_kvc_counters(kvc), ENG_KVC_CTR__COUNT)).  The blocks_* and seqs_live
 * entries are gauges (current values), the rest only grow.
 */
#define foreach_eng_kvc_counter(X)                                            \
	X(blocks_total, "KV blocks in the pool (gauge)")                      \
	X(blocks_free, "KV blocks on the free list (gauge)")                  \
	X(blocks_used, "KV blocks referenced by live sequences (gauge)")      \
	X(blocks_cached, "KV blocks unreferenced but kept for prefix hits (gauge)") \
	X(seqs_live, "sequences holding KV blocks (gauge)")                   \
	X(begins, "sequences begun (prefix lookups)")                         \
	X(hit_blocks, "prompt blocks taken from the prefix cache")            \
	X(hit_tokens, "prompt tokens taken from the prefix cache")            \
	X(miss_blocks, "full prompt blocks not found in the prefix cache")          \
	X(collisions, "hash matches whose tokens or parent differed")         \
	X(registered, "full blocks registered in the prefix cache")           \
	X(dup_blocks, "full blocks not registered: same prefix already cached") \
	X(evictions, "cached blocks evicted (LRU) to give out a block")      \
	X(reserve_fail, "reserves refused: not enough free or cached blocks") \
	X(bad_args, "calls rejected for bad arguments")

enum {
#define X(name, help) ENG_KVC_CTR_##name,
	foreach_eng_kvc_counter(X)
#undef X
	ENG_KVC_CTR__COUNT
};

/* Names and help texts of the counters (ENG_KVC_CTR__COUNT entries). */
extern const struct ctr_desc eng_kvc_ctr_desc[];

/*
 * eng_kvc_init() - allocate a manager for a pool of @cfg->n_blocks blocks,
 * all free.
 * Return: the manager, or NULL with errno EINVAL (n_blocks 0 or over
 * ENG_KVC_BLOCKS_MAX, block_tokens over ENG_KV_BLOCK_TOKENS_MAX) or ENOMEM.
 */
struct eng_kvc *eng_kvc_init(const struct eng_kvc_config *cfg);

/* eng_kvc_fini() - free everything.  Live sequences' tables are left as
 * they are (they name blocks of a pool that no longer exists).  NULL ok. */
void eng_kvc_fini(struct eng_kvc *kvc);

/* Tokens per block and blocks in the pool, as configured. */
uint32_t eng_kvc_block_tokens(const struct eng_kvc *kvc);
uint32_t eng_kvc_blocks_total(const struct eng_kvc *kvc);

/*
 * eng_kvc_blocks_available() - blocks a reserve could obtain now: free
 * plus cached-unreferenced (evictable).  For admission control.
 */
uint32_t eng_kvc_blocks_available(const struct eng_kvc *kvc);

/*
 * eng_kvc_seq_init() - attach a block table to @seq (not live, empty).
 * @blocks, @cap: caller's array of @cap entries, kept until the sequence is
 * released; cap >= 1.  Call once per request slot; the same @seq then
 * serves any number of begin/release rounds.
 */
void eng_kvc_seq_init(struct eng_kvc_seq *seq, uint32_t *blocks, uint32_t cap);

/*
 * eng_kvc_seq_begin() - start a sequence for a prompt: take the longest
 * prefix of FULL blocks that the cache holds (refcount + 1 each), capped so
 * that at least one prompt token is left to compute (its logits are needed)
 * and by the table's cap.  seq->n_tokens and seq->n_cached are set to the
 * cached token count, seq->n_blocks to the blocks taken.  No block is
 * allocated here: reserve before the first step.
 * @prompt, @n: the sequence's tokens so far (prompt; after a preemption the
 *              prompt and the tokens generated), n >= 1.
 * Return: the number of cached tokens (a multiple of block_tokens, < n), or
 * -EINVAL (NULL, n 0, seq not initialised) or -EBUSY (seq already live);
 * nothing changes on error.
 */
int eng_kvc_seq_begin(struct eng_kvc *kvc, struct eng_kvc_seq *seq,
		      const uint32_t *prompt, uint32_t n);

/*
 * eng_kvc_prefix_probe() - the token count eng_kvc_seq_begin() would take
 * from the cache for this prompt now, without taking anything (admission
 * estimates of prefill work).  Counts nothing.
 */
uint32_t eng_kvc_prefix_probe(const struct eng_kvc *kvc,
			      const uint32_t *prompt, uint32_t n);

/*
 * eng_kvc_seq_reserve() - make the table cover @total_tokens positions
 * (blocks for positions up to total_tokens - 1), taking blocks from the
 * free list, else evicting the least recently used cached block.  Never
 * shrinks the table (a smaller total is a no-op returning 0).
 * Return: 0; -ENOSPC when the free and cached blocks together cannot cover
 * it (nothing changed: the scheduler preempts someone or waits); -E2BIG
 * when the table's cap is too small (nothing changed); -EINVAL for a
 * sequence that is not live.
 */
int eng_kvc_seq_reserve(struct eng_kvc *kvc, struct eng_kvc_seq *seq,
			uint32_t total_tokens);

/*
 * eng_kvc_seq_commit() - a step has computed positions up to @n_computed
 * (exclusive): set seq->n_tokens and register the blocks that are now full
 * in the prefix cache, so that later sequences hit them.
 * @tokens: the sequence's token ids at positions 0 .. n_computed - 1 (the
 *          prompt and the generated tokens whose KV is computed); only the
 *          blocks that became full are read.
 * Return: 0; -EINVAL when n_computed is below seq->n_tokens or beyond the
 * reserved blocks, or the sequence is not live (nothing changed).
 */
int eng_kvc_seq_commit(struct eng_kvc *kvc, struct eng_kvc_seq *seq,
		       const uint32_t *tokens, uint32_t n_computed);

/*
 * eng_kvc_seq_release() - the sequence ends (finish, cancel, preemption):
 * refcount - 1 on each of its blocks; a block that drops to 0 goes to the
 * LRU of cached blocks if registered (still hittable), else to the free
 * list.  The table's tail blocks are queued for eviction before its head
 * blocks (a longer prefix is worth less than the shorter one it extends).
 * The sequence is then not live and empty.  Releasing a sequence that is
 * not live is a no-op.
 */
void eng_kvc_seq_release(struct eng_kvc *kvc, struct eng_kvc_seq *seq);

/*
 * eng_kvc_check() - verify every invariant (tests, debug builds; O(blocks
 * + live table entries + hash table)): refcounts equal the live tables'
 * references; free + used + cached == total and the gauges agree; the free
 * list and the LRU list are consistent and hold exactly the FREE and CACHED
 * blocks; each registered block is findable under its hash; blocks past a
 * live sequence's last full block are unshared and unregistered.
 * Return: 0, or -EUCLEAN with the first violation described in @why (may
 * be NULL).
 */
int eng_kvc_check(const struct eng_kvc *kvc, const char **why);

/*
 * eng_kvc_idle_ok() - true when no sequence is live and every block is
 * FREE or CACHED (refcount 0): what "after the load every KV block is free"
 * means with a prefix cache.
 */
bool eng_kvc_idle_ok(const struct eng_kvc *kvc);

/* Counter array (ENG_KVC_CTR__COUNT entries, foreach_eng_kvc_counter). */
const uint64_t *eng_kvc_counters(const struct eng_kvc *kvc);

/*
 * eng_kvc_test_hash_hook() - tests only: replace the block hash with
 * @fn (NULL restores XXH3), to force collisions.
 */
typedef uint64_t (*eng_kvc_hash_fn)(const uint32_t *tokens, uint32_t n,
				    uint64_t parent);
void eng_kvc_test_hash_hook(struct eng_kvc *kvc, eng_kvc_hash_fn fn);

#endif /* VELO_ENG_KV_CACHE_H */
