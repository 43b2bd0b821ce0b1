/* moec quantize: not implemented yet (placeholder so the command table links). */
#include "cli.h"

int cmd_quantize(int argc, char **argv) {
    (void)argc;
    return cli_usage_error(argv[0], "not implemented yet");
}
