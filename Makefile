# moec build. `make` builds the library and the `moec` command; `make test` runs the suite;
# `make asan` runs it again under AddressSanitizer+UBSan; `make check` = deps + all of it (what CI runs).
BUILD   ?= build
CC      ?= gcc
OPT     ?= -O2
SAN     ?=
CFLAGS  ?=
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -fopenmp -g -MMD -MP -Isrc $(OPT) $(SAN)
LDLIBS  += -lcjson -lm
LDFLAGS += -fopenmp $(SAN)

LIB_SRC  := $(wildcard src/*.c)
CLI_SRC  := $(wildcard cli/*.c)
TEST_SRC := $(wildcard tests/test_*.c)
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)

.PHONY: all test asan clang check deps peer bench demo default-model clean
all: $(BUILD)/moec $(TEST_BIN)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libmoec.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/moec: $(CLI_OBJ) $(BUILD)/libmoec.a
	$(CC) $(LDFLAGS) $(CLI_OBJ) $(BUILD)/libmoec.a $(LDLIBS) -o $@

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(BUILD)/libmoec.a
	$(CC) $(LDFLAGS) $< $(BUILD)/libmoec.a $(LDLIBS) -o $@

deps:
	bash scripts/install-deps.sh

# llama.cpp as a peer (npm node-llama-cpp, prebuilt): benchmarks and the llama.cpp cross-check tests use it;
# if the registry cannot be reached those tests skip and say so.
peer:
	bash bench/setup.sh || echo "peer: node-llama-cpp not installed; llama.cpp cross-checks will skip" >&2

test: all
	bash tests/run.sh $(BUILD)

asan:
	$(MAKE) BUILD=build/asan OPT=-O1 SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" test

# Warnings must also be clean under clang (build only).
clang:
	$(MAKE) BUILD=build/clang CC=clang all

check: deps peer
	$(MAKE) all
	$(MAKE) clang
	$(MAKE) test
	$(MAKE) asan

bench: all
	bash bench/run.sh $(BUILD)

demo: deps all
	bash scripts/demo.sh $(BUILD)

# Retrain the shipped default model (models/default.gguf) from scratch with moec itself.
default-model: all
	bash scripts/make-default-model.sh

clean:
	rm -rf build

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TEST_BIN:=.d)
