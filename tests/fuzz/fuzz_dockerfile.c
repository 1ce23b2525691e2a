/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target for the Dockerfile frontend: whatever parses must give well-formed instructions
 * (keyword, original text, position, NULL-terminated arguments, named flags, heredocs with a
 * body), and every instruction's text, arguments, flag values and heredoc bodies must go
 * through Docker's substitution with a fixed set of variables, ending in a result or an error
 * that names the place; whatever fails to parse must say where. The same bytes are also read
 * as a .dockerignore and matched against a few paths. Any broken promise aborts; leaks show
 * under ASan.
 */
#include "builder/builder.h"

#include <string.h>
#include <strings.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *lookup(const char *name, void *payload)
{
	(void)payload;
	static const char *const env[][2] = {
		{ "HOME", "/root" },    { "EMPTY", "" },       { "LIST", "a b  c" },
		{ "FILE", "x.tar.gz" }, { "Q", "'\"$HOME\\" }, { "1", "one" },
	};
	for (size_t i = 0; i < SW_ARRAY_SIZE(env); i++)
		if (strcmp(env[i][0], name) == 0)
			return env[i][1];
	return NULL;
}

static void expand(const sw_dockerfile *df, const sw_df_instruction *ins, const char *text)
{
	char *out = NULL;
	char **words = NULL;
	sw_error *err = NULL;
	int r = sw_df_expand(&out, &words, df, ins, text, lookup, NULL, &err);
	if (r == 0) {
		if (err || !out || !words)
			abort();
		for (size_t i = 0; words[i]; i++)
			if (!*words[i])
				abort(); /* ProcessWords never gives empty words */
	} else {
		if (r != SW_ERR_INVALID || out || words || !err ||
		    strncmp(err->msg, "fuzz.Dockerfile:", 16) != 0)
			abort();
	}
	free(out);
	sw_strv_free(words);
	sw_error_free(err);
}

static void check_instruction(const sw_dockerfile *df, const sw_df_instruction *ins, int depth)
{
	if (!ins->keyword || !ins->original || !ins->args || ins->line < 1 || ins->column < 1 ||
	    strcasecmp(ins->keyword, sw_df_kind_name(ins->kind)) != 0)
		abort();
	expand(df, ins, ins->original);
	for (size_t i = 0; ins->args[i]; i++)
		expand(df, ins, ins->args[i]);
	for (size_t i = 0; i < ins->n_flags; i++) {
		if (!ins->flags[i].name || ins->flags[i].line < 1)
			abort();
		if (ins->flags[i].value)
			expand(df, ins, ins->flags[i].value);
	}
	for (size_t i = 0; i < ins->n_heredocs; i++) {
		const sw_df_heredoc *h = &ins->heredocs[i];
		if (!h->name || !*h->name || !h->content)
			abort();
		char *out = NULL;
		sw_error *err = NULL;
		if (sw_df_expand_heredoc(&out, df, ins, h, lookup, NULL, &err) == 0) {
			if (!out || err)
				abort();
		} else if (out || !err) {
			abort();
		}
		free(out);
		sw_error_free(err);
	}
	for (size_t i = 0; ins->args[i]; i++) {
		const sw_df_heredoc *h = sw_df_heredoc_for_arg(ins, ins->args[i]);
		if (h && (h < ins->heredocs || h >= ins->heredocs + ins->n_heredocs))
			abort();
	}
	if (ins->onbuild) {
		if (ins->kind != SW_DF_ONBUILD || depth > 0 || ins->onbuild->kind == SW_DF_ONBUILD)
			abort();
		check_instruction(df, ins->onbuild, depth + 1);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *buf = (const char *)data;
	sw_dockerfile *df = NULL;
	sw_error *err = NULL;
	if (sw_df_parse(&df, buf, size, "fuzz.Dockerfile", &err) < 0) {
		if (df || !err || err->code != SW_ERR_INVALID ||
		    strncmp(err->msg, "fuzz.Dockerfile:", 16) != 0)
			abort();
		sw_error_clear(&err);
	} else {
		if (err || !df || df->n_instructions == 0 ||
		    (df->escape != '\\' && df->escape != '`'))
			abort();
		for (size_t i = 0; i < df->n_instructions; i++)
			check_instruction(df, &df->instructions[i], 0);
		sw_df_free(df);
	}

	sw_dockerignore *di = NULL;
	if (sw_dockerignore_parse(&di, buf, size, "fuzz.dockerignore", &err) < 0) {
		if (di || !err)
			abort();
		sw_error_free(err);
		return 0;
	}
	static const char *const paths[] = { "a",           "a/b/c.txt",
		                             ".git/config", "node_modules/x",
		                             "README.md",   "dir/keep",
		                             "\xc3\xa9/x" };
	for (size_t i = 0; i < SW_ARRAY_SIZE(paths); i++) {
		(void)sw_dockerignore_match(di, paths[i]);
		(void)sw_dockerignore_may_include_under(di, paths[i]);
	}
	sw_dockerignore_free(di);
	return 0;
}
