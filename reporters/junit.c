/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The JUnit XML report of a pipeline. The pipeline itself is one <testsuite> with a <testcase>
 * per job (classname = stage, name = job; <failure> or <error> carry a message attribute and the
 * job log's tail as text, <skipped> marks jobs that did not run). The jobs' own JUnit files are
 * read with libxml2 under strict rules: no network, external entities never loaded or expanded
 * (references to them are dropped), DTDs with an external subset refused, files over 64 MiB
 * refused; their <testsuite> elements (from a <testsuites> or a <testsuite> root) are rebuilt
 * node by node into the report, names prefixed "JOB: ", counts recomputed from the test cases.
 * Every string that goes in is made valid XML (invalid UTF-8 becomes U+FFFD, control characters
 * and terminal escape sequences are dropped) and escaped by libxml2's tree serializer. The
 * report is written atomically.
 */
#include "reporters/reporters.h"
#include "reporters/reporters_internal.h"

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlerror.h>
#include <pthread.h>
#include <string.h>

#define JUNIT_MAX_FILE ((size_t)64 << 20)

typedef struct jcase {
	char *stage, *job, *message, *tail;
	sw_junit_result result;
	double seconds;
} jcase;

struct sw_junit {
	pthread_mutex_t lock;
	char *name;
	jcase *cases;
	size_t n_cases;
	xmlDocPtr merged; /* root <testsuites> holding the rebuilt suites */
	unsigned tests, failures, errors, skipped; /* of the merged suites */
};

typedef struct counts {
	unsigned tests, failures, errors, skipped;
} counts;

static pthread_once_t xml_once = PTHREAD_ONCE_INIT;

static void xml_init(void)
{
	xmlInitParser();
}

/* ---------------------------------------------------------------- text */

/* Length of a valid XML character encoded in UTF-8 at s (0: not one). */
static size_t xml_char_len(const unsigned char *s, size_t n)
{
	uint32_t cp;
	size_t l;
	if (s[0] < 0x80) {
		if (s[0] < 0x20 && s[0] != '\t' && s[0] != '\n' && s[0] != '\r')
			return 0;
		return s[0] == 0x7f ? 0 : 1;
	} else if ((s[0] & 0xe0) == 0xc0) {
		cp = s[0] & 0x1f;
		l = 2;
	} else if ((s[0] & 0xf0) == 0xe0) {
		cp = s[0] & 0x0f;
		l = 3;
	} else if ((s[0] & 0xf8) == 0xf0) {
		cp = s[0] & 0x07;
		l = 4;
	} else {
		return 0;
	}
	if (l > n)
		return 0;
	for (size_t i = 1; i < l; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	static const uint32_t min[] = { 0, 0, 0x80, 0x800, 0x10000 };
	if (cp < min[l] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) || cp == 0xfffe ||
	    cp == 0xffff || (cp >= 0x80 && cp < 0xa0))
		return 0;
	return l;
}

/*
 * A copy of s that is valid XML character data: terminal escape sequences (CSI "ESC [ ... final"
 * and two-byte ones) and other control characters dropped, invalid UTF-8 replaced by U+FFFD.
 */
static char *xml_clean(const char *s)
{
	if (!s)
		return NULL;
	size_t n = strlen(s);
	sw_buf b = SW_BUF_INIT(0);
	sw_error *e = NULL;
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0;
	while (i < n) {
		if (u[i] == 0x1b) {
			i++;
			if (i < n && u[i] == '[') {
				i++;
				while (i < n && !(u[i] >= 0x40 && u[i] <= 0x7e))
					i++;
				if (i < n)
					i++;
			} else if (i < n && u[i] == ']') {
				/* OSC: up to BEL or ESC \ */
				while (i < n && u[i] != 0x07 && u[i] != 0x1b)
					i++;
				if (i < n && u[i] == 0x07)
					i++;
				else if (i + 1 < n && u[i + 1] == '\\')
					i += 2;
			} else if (i < n) {
				i++;
			}
			continue;
		}
		size_t l = xml_char_len(u + i, n - i);
		int r;
		if (l) {
			r = sw_buf_append(&b, s + i, l, &e);
			i += l;
		} else {
			r = u[i] < 0x80 ? 0 : sw_buf_append(&b, "\xef\xbf\xbd", 3, &e);
			i++;
		}
		if (r < 0) {
			sw_error_clear(&e);
			break;
		}
	}
	size_t len;
	return sw_buf_steal(&b, &len);
}

static void set_prop(xmlNodePtr n, const char *name, const char *value)
{
	cleanup_free char *v = xml_clean(value ? value : "");
	xmlSetProp(n, BAD_CAST name, BAD_CAST v);
}

static void set_prop_uint(xmlNodePtr n, const char *name, unsigned v)
{
	char buf[32];
	snprintf(buf, sizeof(buf), "%u", v);
	xmlSetProp(n, BAD_CAST name, BAD_CAST buf);
}

static void set_prop_time(xmlNodePtr n, double seconds)
{
	char buf[64];
	snprintf(buf, sizeof(buf), "%.3f", seconds < 0 ? 0.0 : seconds);
	xmlSetProp(n, BAD_CAST "time", BAD_CAST buf);
}

/* ---------------------------------------------------------------- the model */

sw_junit *sw_junit_new(const char *pipeline_name)
{
	pthread_once(&xml_once, xml_init);
	sw_junit *j = sw_xcalloc(1, sizeof(*j));
	pthread_mutex_init(&j->lock, NULL);
	j->name = sw_xstrdup(pipeline_name ? pipeline_name : "pipeline");
	j->merged = xmlNewDoc(BAD_CAST "1.0");
	xmlDocSetRootElement(j->merged,
	                     xmlNewDocNode(j->merged, NULL, BAD_CAST "testsuites", NULL));
	return j;
}

void sw_junit_add_job(sw_junit *j, const char *stage, const char *job, sw_junit_result r,
                      double seconds, const char *message, const char *log_tail)
{
	if (!j)
		return;
	pthread_mutex_lock(&j->lock);
	j->cases = sw_xrealloc(j->cases, (j->n_cases + 1) * sizeof(*j->cases));
	jcase *c = &j->cases[j->n_cases++];
	c->stage = sw_xstrdup(stage ? stage : "");
	c->job = sw_xstrdup(job ? job : "");
	c->message = message ? sw_xstrdup(message) : NULL;
	c->tail = log_tail ? sw_xstrdup(log_tail) : NULL;
	c->result = r;
	c->seconds = seconds;
	pthread_mutex_unlock(&j->lock);
}

static bool is_elem(xmlNodePtr n, const char *name)
{
	return n && n->type == XML_ELEMENT_NODE && xmlStrcmp(n->name, BAD_CAST name) == 0;
}

static unsigned prop_uint(xmlNodePtr n, const char *name)
{
	xmlChar *v = xmlGetProp(n, BAD_CAST name);
	unsigned r = 0;
	if (v) {
		char *end = NULL;
		unsigned long x = strtoul((const char *)v, &end, 10);
		if (end != (char *)v && x < 10000000)
			r = (unsigned)x;
		xmlFree(v);
	}
	return r;
}

/* Count the test cases of a suite (nested suites included). */
static void count_suite(xmlNodePtr suite, counts *c)
{
	for (xmlNodePtr n = suite->children; n; n = n->next) {
		if (is_elem(n, "testsuite")) {
			count_suite(n, c);
			continue;
		}
		if (!is_elem(n, "testcase"))
			continue;
		c->tests++;
		bool failure = false, error = false, skipped = false;
		for (xmlNodePtr k = n->children; k; k = k->next) {
			failure |= is_elem(k, "failure");
			error |= is_elem(k, "error");
			skipped |= is_elem(k, "skipped");
		}
		if (error)
			c->errors++;
		else if (failure)
			c->failures++;
		else if (skipped)
			c->skipped++;
	}
}

/*
 * Rebuild the children of `from` (in document `src`) under `to`: elements with their attributes,
 * text, CDATA; references to internal entities become their replacement text as plain text,
 * references to external ones are dropped; comments, processing instructions and DTD nodes are
 * left out.
 */
static void copy_children(xmlDocPtr src, xmlNodePtr from, xmlNodePtr to, int depth)
{
	if (depth > 256)
		return;
	for (xmlNodePtr c = from->children; c; c = c->next) {
		switch (c->type) {
		case XML_ELEMENT_NODE: {
			xmlNodePtr n = xmlNewDocNode(to->doc, NULL, c->name, NULL);
			for (xmlAttrPtr a = c->properties; a; a = a->next) {
				xmlChar *v = xmlNodeListGetString(src, a->children, 1);
				xmlNewProp(n, a->name, v ? v : BAD_CAST "");
				xmlFree(v);
			}
			copy_children(src, c, n, depth + 1);
			xmlAddChild(to, n);
			break;
		}
		case XML_TEXT_NODE:
			xmlAddChild(to, xmlNewDocText(to->doc, c->content));
			break;
		case XML_CDATA_SECTION_NODE:
			xmlAddChild(to,
			            xmlNewCDataBlock(to->doc, c->content, xmlStrlen(c->content)));
			break;
		case XML_ENTITY_REF_NODE: {
			xmlEntityPtr ent = xmlGetDocEntity(src, c->name);
			if (ent &&
			    (ent->etype == XML_INTERNAL_GENERAL_ENTITY ||
			     ent->etype == XML_INTERNAL_PREDEFINED_ENTITY) &&
			    ent->content) {
				cleanup_free char *t = xml_clean((const char *)ent->content);
				xmlAddChild(to, xmlNewDocText(to->doc, BAD_CAST t));
			}
			break;
		}
		default:
			break;
		}
	}
}

/* Line of the first "<!DOCTYPE" in buf (1-based). */
static int doctype_line(const char *buf, size_t len)
{
	const char *d = memmem(buf, len, "<!DOCTYPE", 9);
	int line = 1;
	for (const char *p = buf; d && p < d; p++)
		line += *p == '\n';
	return line;
}

typedef struct parse_err {
	bool set;
	int line;
	char *msg;
} parse_err;

static void on_xml_error(void *payload, xmlErrorPtr e)
{
	parse_err *pe = payload;
	if (pe->set || !e || e->level < XML_ERR_ERROR)
		return;
	pe->set = true;
	pe->line = e->line;
	char *m = sw_xstrdup(e->message ? e->message : "XML error");
	size_t l = strlen(m);
	while (l && (m[l - 1] == '\n' || m[l - 1] == ' '))
		m[--l] = '\0';
	pe->msg = m;
}

static void on_generic_error(void *payload, const char *msg, ...)
{
	(void)payload;
	(void)msg;
}

static int merge_doc(sw_junit *j, const char *job, const char *name, xmlDocPtr doc, const char *buf,
                     size_t len, sw_error **err)
{
	if (doc->intSubset && (doc->intSubset->ExternalID || doc->intSubset->SystemID))
		return sw_error_set(err, SW_ERR_INVALID,
		                    "%s:%d: a DTD with an external subset is not accepted", name,
		                    doctype_line(buf, len));
	xmlNodePtr root = xmlDocGetRootElement(doc);
	if (!root)
		return sw_error_set(err, SW_ERR_INVALID, "%s:1: no root element", name);
	if (!is_elem(root, "testsuites") && !is_elem(root, "testsuite"))
		return sw_error_set(err, SW_ERR_INVALID,
		                    "%s:%ld: not a JUnit report (root element <%s>, expected "
		                    "<testsuites> or <testsuite>)",
		                    name, xmlGetLineNo(root), (const char *)root->name);

	xmlNodePtr dest = xmlDocGetRootElement(j->merged);
	counts total = { 0 };
	bool single = is_elem(root, "testsuite");
	xmlNodePtr first = single ? root : root->children;
	for (xmlNodePtr s = first; s; s = single ? NULL : s->next) {
		if (!is_elem(s, "testsuite"))
			continue;
		counts c = { 0 };
		count_suite(s, &c);
		if (!c.tests) {
			/* a suite without test cases: trust its attributes */
			c.tests = prop_uint(s, "tests");
			c.failures = prop_uint(s, "failures");
			c.errors = prop_uint(s, "errors");
			c.skipped = prop_uint(s, "skipped");
		}
		xmlNodePtr n = xmlNewDocNode(j->merged, NULL, BAD_CAST "testsuite", NULL);
		for (xmlAttrPtr a = s->properties; a; a = a->next) {
			xmlChar *v = xmlNodeListGetString(doc, a->children, 1);
			xmlNewProp(n, a->name, v ? v : BAD_CAST "");
			xmlFree(v);
		}
		xmlChar *sname = xmlGetProp(s, BAD_CAST "name");
		cleanup_free char *full = sname && *sname
		                                  ? sw_xasprintf("%s: %s", job, (const char *)sname)
		                                  : sw_xstrdup(job);
		xmlFree(sname);
		set_prop(n, "name", full);
		set_prop_uint(n, "tests", c.tests);
		set_prop_uint(n, "failures", c.failures);
		set_prop_uint(n, "errors", c.errors);
		set_prop_uint(n, "skipped", c.skipped);
		copy_children(doc, s, n, 0);
		xmlAddChild(dest, n);
		total.tests += c.tests;
		total.failures += c.failures;
		total.errors += c.errors;
		total.skipped += c.skipped;
	}
	j->tests += total.tests;
	j->failures += total.failures;
	j->errors += total.errors;
	j->skipped += total.skipped;
	return 0;
}

int sw_junit__merge_buffer(sw_junit *j, const char *job, const char *name, const char *buf,
                           size_t len, sw_error **err)
{
	if (len > JUNIT_MAX_FILE)
		return sw_error_set(err, SW_ERR_INVALID, "%s: larger than %zu MiB", name,
		                    JUNIT_MAX_FILE >> 20);
	if (len > INT32_MAX)
		return sw_error_set(err, SW_ERR_INVALID, "%s: too large", name);
	pthread_once(&xml_once, xml_init);
	parse_err pe = { 0 };
	/* libxml2 keeps these per thread: catch this parse's errors, print nothing */
	xmlSetStructuredErrorFunc(&pe, on_xml_error);
	xmlSetGenericErrorFunc(NULL, on_generic_error);
	xmlParserCtxtPtr ctxt = xmlNewParserCtxt();
	xmlDocPtr doc = NULL;
	if (ctxt)
		doc = xmlCtxtReadMemory(ctxt, buf, (int)len, name, NULL,
		                        XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
	if (ctxt && !pe.set && !ctxt->wellFormed) {
		xmlErrorPtr le = xmlCtxtGetLastError(ctxt);
		if (le)
			on_xml_error(&pe, le);
	}
	xmlSetStructuredErrorFunc(NULL, NULL);
	xmlSetGenericErrorFunc(NULL, NULL);
	int r = 0;
	if (!ctxt) {
		r = sw_error_set(err, SW_ERR_GENERIC, "%s: cannot create an XML parser", name);
	} else if (!doc || !ctxt->wellFormed || pe.set) {
		r = sw_error_set(err, SW_ERR_INVALID, "%s:%d: %s", name, pe.set ? pe.line : 1,
		                 pe.set ? pe.msg : "not well-formed XML");
	} else {
		pthread_mutex_lock(&j->lock);
		r = merge_doc(j, job ? job : "job", name, doc, buf, len, err);
		pthread_mutex_unlock(&j->lock);
	}
	free(pe.msg);
	if (doc)
		xmlFreeDoc(doc);
	if (ctxt)
		xmlFreeParserCtxt(ctxt);
	return r;
}

int sw_junit_merge_file(sw_junit *j, const char *job, const char *path, sw_error **err)
{
	cleanup_free char *buf = NULL;
	size_t len = 0;
	int r = sw_fs_read_file(&buf, &len, path, JUNIT_MAX_FILE, err);
	if (r < 0)
		return sw_error_wrap(err, "JUnit report of job '%s'", job ? job : "");
	return sw_junit__merge_buffer(j, job, path, buf, len, err);
}

void sw_junit_counts(const sw_junit *j, unsigned *tests, unsigned *failures, unsigned *errors,
                     unsigned *skipped)
{
	counts c = { 0 };
	if (j) {
		pthread_mutex_lock((pthread_mutex_t *)&j->lock);
		c.tests = j->tests + (unsigned)j->n_cases;
		c.failures = j->failures;
		c.errors = j->errors;
		c.skipped = j->skipped;
		for (size_t i = 0; i < j->n_cases; i++) {
			c.failures += j->cases[i].result == SW_JUNIT_FAILED;
			c.errors += j->cases[i].result == SW_JUNIT_ERROR;
			c.skipped += j->cases[i].result == SW_JUNIT_SKIPPED;
		}
		pthread_mutex_unlock((pthread_mutex_t *)&j->lock);
	}
	if (tests)
		*tests = c.tests;
	if (failures)
		*failures = c.failures;
	if (errors)
		*errors = c.errors;
	if (skipped)
		*skipped = c.skipped;
}

/* ---------------------------------------------------------------- writing */

static xmlDocPtr build_doc(const sw_junit *j)
{
	xmlDocPtr doc = xmlNewDoc(BAD_CAST "1.0");
	xmlNodePtr root = xmlNewDocNode(doc, NULL, BAD_CAST "testsuites", NULL);
	xmlDocSetRootElement(doc, root);

	counts pc = { 0 };
	double total_time = 0;
	xmlNodePtr suite = xmlNewDocNode(doc, NULL, BAD_CAST "testsuite", NULL);
	for (size_t i = 0; i < j->n_cases; i++) {
		const jcase *c = &j->cases[i];
		pc.tests++;
		total_time += c->seconds > 0 ? c->seconds : 0;
		xmlNodePtr tc = xmlNewDocNode(doc, NULL, BAD_CAST "testcase", NULL);
		set_prop(tc, "classname", c->stage);
		set_prop(tc, "name", c->job);
		set_prop_time(tc, c->seconds);
		const char *el = NULL;
		switch (c->result) {
		case SW_JUNIT_PASSED:
			break;
		case SW_JUNIT_FAILED:
			el = "failure";
			pc.failures++;
			break;
		case SW_JUNIT_ERROR:
			el = "error";
			pc.errors++;
			break;
		case SW_JUNIT_SKIPPED:
			el = "skipped";
			pc.skipped++;
			break;
		}
		if (el) {
			xmlNodePtr f = xmlNewDocNode(doc, NULL, BAD_CAST el, NULL);
			if (c->message)
				set_prop(f, "message", c->message);
			if (c->result != SW_JUNIT_SKIPPED && c->tail && *c->tail) {
				cleanup_free char *t = xml_clean(c->tail);
				xmlAddChild(f, xmlNewDocText(doc, BAD_CAST t));
			}
			xmlAddChild(tc, f);
		}
		xmlAddChild(suite, tc);
	}
	set_prop(suite, "name", j->name);
	set_prop_uint(suite, "tests", pc.tests);
	set_prop_uint(suite, "failures", pc.failures);
	set_prop_uint(suite, "errors", pc.errors);
	set_prop_uint(suite, "skipped", pc.skipped);
	set_prop_time(suite, total_time);
	xmlAddChild(root, suite);

	xmlNodePtr merged = xmlDocGetRootElement(j->merged);
	for (xmlNodePtr n = merged->children; n; n = n->next)
		xmlAddChild(root, xmlDocCopyNode(n, doc, 1));

	set_prop(root, "name", j->name);
	set_prop_uint(root, "tests", pc.tests + j->tests);
	set_prop_uint(root, "failures", pc.failures + j->failures);
	set_prop_uint(root, "errors", pc.errors + j->errors);
	set_prop_uint(root, "skipped", pc.skipped + j->skipped);
	set_prop_time(root, total_time);
	return doc;
}

void sw_junit__serialize(const sw_junit *j, char **out, size_t *len)
{
	pthread_mutex_lock((pthread_mutex_t *)&j->lock);
	xmlDocPtr doc = build_doc(j);
	pthread_mutex_unlock((pthread_mutex_t *)&j->lock);
	xmlChar *mem = NULL;
	int size = 0;
	xmlDocDumpFormatMemoryEnc(doc, &mem, &size, "UTF-8", 1);
	xmlFreeDoc(doc);
	*out = sw_xstrndup(mem ? (const char *)mem : "", mem ? (size_t)size : 0);
	*len = mem ? (size_t)size : 0;
	xmlFree(mem);
}

int sw_junit_write(const sw_junit *j, const char *path, sw_error **err)
{
	cleanup_free char *data = NULL;
	size_t len = 0;
	sw_junit__serialize(j, &data, &len);
	if (!len)
		return sw_error_set(err, SW_ERR_GENERIC, "JUnit report '%s': cannot serialize",
		                    path);
	int r = sw_fs_write_atomic(path, data, len, 0644, err);
	if (r < 0)
		return sw_error_wrap(err, "write JUnit report '%s'", path);
	return 0;
}

void sw_junit_free(sw_junit *j)
{
	if (!j)
		return;
	for (size_t i = 0; i < j->n_cases; i++) {
		free(j->cases[i].stage);
		free(j->cases[i].job);
		free(j->cases[i].message);
		free(j->cases[i].tail);
	}
	free(j->cases);
	free(j->name);
	xmlFreeDoc(j->merged);
	pthread_mutex_destroy(&j->lock);
	free(j);
}
