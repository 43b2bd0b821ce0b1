/* The moec command: one file per subcommand (cli/cmd_NAME.c defines `int cmd_NAME(int argc, char **argv)`,
 * argv[0] being the subcommand name). Subcommands parse arguments, call the library, and turn a library
 * failure into one line on stderr ("moec NAME: message") and exit status 1; bad usage exits 2. */
#ifndef MOEC_CLI_H
#define MOEC_CLI_H

#define CLI_COMMANDS(X)                                                                            \
    X(tokenize, "encode text to token ids or pieces")                                              \
    X(detokenize, "decode token ids to text")                                                      \
    X(generate, "generate text from a prompt")                                                     \
    X(chat, "interactive chat (Yuan prompt format)")                                               \
    X(logits, "write the logits of every position as .npy")                                        \
    X(info, "architecture, hyper-parameters, parameters and FLOPs per token")                     \
    X(convert, "convert a HuggingFace Yuan2 or llama2.c checkpoint to GGUF")                       \
    X(init, "write a randomly initialised model")                                                  \
    X(prepare, "turn text files into token shards")                                                \
    X(train, "train a model on token shards")                                                      \
    X(export, "strip training state from a checkpoint")                                            \
    X(perplexity, "perplexity of a model on a text file")                                          \
    X(quantize, "convert weights to Q8_0 / Q4_0 / ...")                                            \
    X(bench, "measure prompt and decode speed")

#define CLI_DECLARE(name, help) int cmd_##name(int argc, char **argv);
CLI_COMMANDS(CLI_DECLARE)

/* Print "moec CMD: <last library error>" to stderr and return 1. */
int cli_fail(const char *cmd);
/* Print "moec CMD: <message>" to stderr and return 2 (usage error). */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Parse helpers: strict (whole string, range-checked); on failure print a usage error and return -1. */
int cli_parse_int(const char *cmd, const char *opt, const char *s, long lo, long hi, long *out);
int cli_parse_float(const char *cmd, const char *opt, const char *s, double *out);

#endif
