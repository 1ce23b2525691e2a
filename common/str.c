/* SPDX-License-Identifier: Apache-2.0 */
/* Small string helpers shared by the parsers: the nearest known word, for "did you mean"
 * hints in messages about pipeline files and agent configurations. (The Dockerfile parser keeps
 * BuildKit's own rule for instructions.) */
#include "common/common.h"

#include <string.h>
#include <strings.h>

/* Optimal string alignment distance (a swap of two neighbours counts 1), capped at 9. */
static size_t distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	if (la > 40 || lb > 40)
		return 9;
	size_t d[41][41];
	for (size_t i = 0; i <= la; i++)
		d[i][0] = i;
	for (size_t j = 0; j <= lb; j++)
		d[0][j] = j;
	for (size_t i = 1; i <= la; i++) {
		for (size_t j = 1; j <= lb; j++) {
			size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
			size_t v = d[i - 1][j] + 1;
			if (d[i][j - 1] + 1 < v)
				v = d[i][j - 1] + 1;
			if (d[i - 1][j - 1] + cost < v)
				v = d[i - 1][j - 1] + cost;
			if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
			    d[i - 2][j - 2] + 1 < v)
				v = d[i - 2][j - 2] + 1;
			d[i][j] = v;
		}
	}
	return d[la][lb];
}

const char *sw_str_nearest(const char *word, const char *const *cands, size_t n)
{
	const char *best = NULL;
	size_t best_d = 100;
	size_t len = strlen(word);
	size_t max = len <= 3 ? 1 : 2;
	for (size_t i = 0; i < n; i++) {
		if (strcasecmp(word, cands[i]) == 0)
			return cands[i];
		size_t d = distance(word, cands[i]);
		if (d <= max && d < best_d) {
			best = cands[i];
			best_d = d;
		}
	}
	return best;
}
