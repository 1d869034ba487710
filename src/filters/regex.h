/* A thin C interface to RE2 for Capture's regex strategy (spec filters.md §2): Quilkin
 * v0.7.0 uses Rust's regex crate, which runs in time linear in the input and refuses
 * back-references and look-around; RE2 has both properties and the same leftmost-first
 * semantics. Patterns and subjects are raw bytes (Latin-1 mode: every byte is one
 * character, so any packet can be searched). */
#ifndef QK_FILTERS_REGEX_H
#define QK_FILTERS_REGEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct regex;

/* Compiles pattern[0..len) (Rust/RE2 syntax, flags i m s U). NULL with msg filled
 * ("missing ): (unclosed", "invalid perl operator: (?=", "pattern too large") when the
 * pattern is invalid, uses a construct the regex crate does not have, or needs more than
 * the memory budget; also NULL on OOM ("out of memory"). Any thread. */
struct regex *regex_compile(const char *pattern, size_t len, char *msg, size_t msg_cap);

/* The leftmost-first match of re in text[0..len) that starts at or after pos (text before
 * pos is context for ^ and \b); true with [*start, *end) set, false when there is none.
 * Time linear in len. Safe from any thread, but give each worker its own object: RE2 guards
 * its lazily built automaton with an internal reader lock (then never contended) and may
 * allocate while that bounded cache fills or is rebuilt. */
bool regex_find(const struct regex *re, const uint8_t *text, size_t len, size_t pos,
                size_t *start, size_t *end);

void regex_free(struct regex *re);

#ifdef __cplusplus
}
#endif

#endif
