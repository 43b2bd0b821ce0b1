/* moec tokenize: not implemented yet (placeholder so the command table links). */
#include "cli.h"

int cmd_tokenize(int argc, char **argv) {
    (void)argc;
    return cli_usage_error(argv[0], "not implemented yet");
}
