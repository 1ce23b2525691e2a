/* SPDX-License-Identifier: Apache-2.0 */
/* Facts about processes from /proc: the start time that, with the pid, names a process for
 * good (owner labels of containers, scratch folders, secret folders and namespaces). */
#include "common/common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int sw_proc_starttime(unsigned long long *out, pid_t pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	int e = errno;
	close(fd);
	if (n <= 0)
		return n < 0 ? -e : -EINVAL;
	buf[n] = '\0';
	/* "pid (comm) state f4 f5 ...": comm may hold spaces and ')', so start after the last ')'
	 */
	char *p = strrchr(buf, ')');
	if (!p)
		return -EINVAL;
	p++;
	/* fields 3..21 come before the start time (field 22) */
	for (int field = 3; field <= 22; field++) {
		while (*p == ' ')
			p++;
		if (*p == '\0')
			return -EINVAL;
		if (field == 22) {
			char *end = NULL;
			errno = 0;
			unsigned long long v = strtoull(p, &end, 10);
			if (errno || end == p)
				return -EINVAL;
			*out = v;
			return 0;
		}
		p += strcspn(p, " ");
	}
	return -EINVAL;
}
