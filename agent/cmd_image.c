/* SPDX-License-Identifier: Apache-2.0 */
/* `slipway image`: dispatch to copy, import, inspect and ls. */
#include "agent/agent.h"

#include <string.h>

static const char usage[] =
        "usage: slipway image COMMAND ...\n"
        "\n"
        "commands:\n"
        "  copy SRC DST             copy an image between OCI layouts and registries\n"
        "  import ROOTFS.tar DST    make a one-layer image from a root filesystem tarball\n"
        "  inspect REF              print the manifest digest, config and layers as JSON\n"
        "  ls [oci:DIR]             list the images of a layout (default: the local store)\n"
        "\n"
        "An image reference is oci:DIR:TAG (an OCI image layout folder), docker://HOST[:PORT]/REPO\n"
        "[:TAG|@DIGEST] (a registry), or a plain NAME[:TAG] in the local store.\n"
        "Run 'slipway image COMMAND --help' for a command's own help.\n";

int sw_cmd_image(int argc, char **argv)
{
	if (argc < 2) {
		fputs(usage, stderr);
		return 2;
	}
	const char *sub = argv[1];
	if (sw_cli_is_help(sub) || strcmp(sub, "help") == 0) {
		fputs(usage, stdout);
		return 0;
	}
	if (strcmp(sub, "copy") == 0 || strcmp(sub, "cp") == 0)
		return sw_cmd_image_copy(argc - 1, argv + 1);
	if (strcmp(sub, "import") == 0)
		return sw_cmd_image_import(argc - 1, argv + 1);
	if (strcmp(sub, "inspect") == 0)
		return sw_cmd_image_inspect(argc - 1, argv + 1);
	if (strcmp(sub, "ls") == 0 || strcmp(sub, "list") == 0)
		return sw_cmd_image_ls(argc - 1, argv + 1);
	fprintf(stderr, "slipway: error: unknown image command '%s'\n\n%s", sub, usage);
	return 2;
}
