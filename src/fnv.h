/* fnv: 64-bit FNV-1a, the one hash of the filesystem: inode numbers from paths (tree)
 * and the fingerprint that tells a file's bytes changed (fs_core). Not cryptographic;
 * stable across builds and runs, which is what inode numbers need. Header-only. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define FNV1A_64_OFFSET 0xcbf29ce484222325ULL
#define FNV1A_64_PRIME	0x100000001b3ULL

/* The FNV-1a state after @len bytes of @data, continuing from @h (start: FNV1A_64_OFFSET). */
static inline uint64_t fnv1a_64(uint64_t h, const void *data, size_t len)
{
	const unsigned char *p = data;

	for (size_t i = 0; i < len; i++)
		h = (h ^ p[i]) * FNV1A_64_PRIME;
	return h;
}
