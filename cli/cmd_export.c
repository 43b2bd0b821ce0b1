/* moec export CKPT OUT: copy a training checkpoint without its training state (train.* keys and tensors: optimizer
 * moments, step, RNG, data position). The result is a plain model file. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "train.h"

int cmd_export(int argc, char **argv) {
    if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        printf("usage: moec export CKPT OUT   (strip optimizer state, step, RNG and data position)\n");
        return 0;
    }
    if (argc != 3) return cli_usage_error(argv[0], "usage: moec export CKPT OUT");
    if (train_export(argv[1], argv[2]) != 0) return cli_fail(argv[0]);
    return 0;
}
