# optillm in C. `make run` installs what is missing, builds and starts the proxy; `make test`
# runs every test. See README.md.
PKGS    := libmicrohttpd libcurl libcjson libpcre2-8 libssl libcrypto z3 hiredis libxml-2.0 sqlite3
comma   := ,
BUILD   ?= build$(if $(SANITIZE),-$(subst $(comma),-,$(SANITIZE)))
CC      ?= cc
JOBS    ?= $(shell nproc 2>/dev/null || echo 2)
OPT     ?= -O2 -g
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CFLAGS  += -std=c11 -D_POSIX_C_SOURCE=200809L -pthread -MMD -MP -Iinclude -Isrc -Ieval \
           -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
           -Wformat=2 -Wvla $(OPT) $(PKG_CFLAGS)
LDLIBS  += $(PKG_LIBS) -lm -pthread
ifdef SANITIZE
CFLAGS  += -fsanitize=$(SANITIZE) -fno-sanitize-recover=all -fno-omit-frame-pointer
LDFLAGS += -fsanitize=$(SANITIZE)
OPT     := -O1 -g
endif

CORE_SRC := $(filter-out src/main.c,$(wildcard src/*.c)) $(wildcard approaches/*.c)
CORE_OBJ := $(CORE_SRC:%.c=$(BUILD)/%.o) $(BUILD)/gen/prompts_embed.o
PROMPTS  := $(shell find prompts -name '*.txt' 2>/dev/null)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT     := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
ITEST_SRC := $(wildcard tests/integration/itest_*.c)
ITEST    := $(ITEST_SRC:tests/integration/%.c=$(BUILD)/tests/%)
HARNESS_OBJ := $(BUILD)/tests/integration/harness.o
# The official OpenAI and Anthropic SDKs (npm) against the proxy; skipped in sanitizer builds (slow, and the
# C suites already cover the same paths there).
SDK_TEST := $(if $(SANITIZE),,tests/sdk/run.sh tests/sdk_doors/run.sh)
# Each fuzz target for 25 s (FUZZ_SECONDS); skipped in sanitizer builds (already ASan+UBSan).
FUZZ_TEST := $(if $(SANITIZE),,tests/fuzz/run.sh)

.PHONY: all deps run test test-scale install uninstall check-sanitize check-valgrind fuzz fuzz-build format format-check clean bench
.SECONDARY:

EVAL_SRC := $(wildcard eval/*.c)
EVAL_OBJ := $(EVAL_SRC:%.c=$(BUILD)/%.o)

all: $(BUILD)/optillm $(BUILD)/mock_upstream $(if $(EVAL_SRC),$(BUILD)/optillm-eval)

deps:
	@scripts/deps.sh

run: deps
	@$(MAKE) -j$(JOBS) --no-print-directory all
	./$(BUILD)/optillm $(ARGS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC $<"
	@$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/gen/prompts_embed.c: $(PROMPTS) scripts/embed_prompts.sh
	@mkdir -p $(dir $@)
	scripts/embed_prompts.sh prompts > $@.tmp && mv $@.tmp $@

$(BUILD)/gen/prompts_embed.o: $(BUILD)/gen/prompts_embed.c
	$(CC) $(CFLAGS) -Wno-missing-variable-declarations -c -o $@ $<

$(BUILD)/libcore.a: $(CORE_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/optillm: $(BUILD)/src/main.o $(BUILD)/libcore.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/optillm-eval: $(EVAL_OBJ) $(BUILD)/libcore.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/mock_upstream: $(BUILD)/tests/mock_upstream.o
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/test_%: $(BUILD)/tests/unit/test_%.o $(BUILD)/tests/unit/fake_llm.o $(BUILD)/libcore.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

$(BUILD)/tests/itest_%: $(BUILD)/tests/integration/itest_%.o $(HARNESS_OBJ) $(BUILD)/libcore.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

# Every test binary prints cmocka's summary; a crashed binary counts as a failure. The last
# line is the total: "N passed, N failed".
test: deps format-check
	@$(MAKE) -j$(JOBS) --no-print-directory all $(UNIT) $(ITEST) $(if $(SANITIZE),,fuzz-build)
	@scripts/run_tests.sh $(BUILD) $(UNIT) $(ITEST) $(SDK_TEST) $(FUZZ_TEST)

# Several instances: shared limits in a real redis-server, two instances behind a real nginx
# (both also run by make test), and the deployment files linted and installed (tests/deploy).
test-scale: deps
	@$(MAKE) -j$(JOBS) --no-print-directory all $(BUILD)/tests/itest_redis $(BUILD)/tests/itest_scale
	@scripts/run_tests.sh $(BUILD) $(BUILD)/tests/itest_redis $(BUILD)/tests/itest_scale tests/deploy/run.sh

# make install [PREFIX=/usr/local] [DESTDIR=]: the binaries, man pages made from --help, the
# prompts (to copy and edit for --prompts-dir; the binary has them built in) and the datasets.
PREFIX  ?= /usr/local
SHARE   := $(DESTDIR)$(PREFIX)/share/optillm
MAN1    := $(DESTDIR)$(PREFIX)/share/man/man1
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(MAN1) $(SHARE)
	install -m 0755 $(BUILD)/optillm $(BUILD)/optillm-eval $(DESTDIR)$(PREFIX)/bin/
	scripts/manpage.sh $(BUILD)/optillm optillm \
	    "inference-time optimisation proxy with an OpenAI-compatible API" > $(MAN1)/optillm.1
	scripts/manpage.sh $(BUILD)/optillm-eval optillm-eval \
	    "evaluate inference-time approaches on a dataset" > $(MAN1)/optillm-eval.1
	rm -rf $(SHARE)/prompts $(SHARE)/datasets
	cp -R prompts datasets $(SHARE)/
	chmod -R u=rwX,go=rX $(SHARE)

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/optillm $(DESTDIR)$(PREFIX)/bin/optillm-eval
	rm -f $(MAN1)/optillm.1 $(MAN1)/optillm-eval.1
	rm -rf $(SHARE)

check-sanitize:
	$(MAKE) SANITIZE=address,undefined test
	$(MAKE) SANITIZE=thread test

# Unit tests under valgrind, and the integration tests with the proxy under valgrind (a
# valgrind error makes the proxy exit 9, which fails the test that stops it).
VALGRIND := valgrind -q --error-exitcode=9 --leak-check=full --errors-for-leak-kinds=definite,indirect
check-valgrind: deps
	@$(MAKE) --no-print-directory all $(UNIT) $(ITEST)
	@PX_UNIT_WRAPPER="$(VALGRIND)" PX_WRAPPER="$(VALGRIND)" scripts/run_tests.sh $(BUILD) $(UNIT) $(ITEST)

# libFuzzer targets (clang): request parsing, model names, answer extraction, the SSE parser,
# the front doors.
# `make fuzz` runs each for FUZZ_SECONDS (default 600); `make test` runs each for 25 s.
FUZZ_BUILD   := build-fuzz
FUZZ_CFLAGS  := -std=c11 -D_POSIX_C_SOURCE=200809L -pthread -Iinclude -Isrc -g -O1 \
                -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all \
                $(PKG_CFLAGS)
FUZZ_TARGETS := request model answer sse door html
FUZZ_BINS    := $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz_%)
FUZZ_OBJ     := $(CORE_SRC:%.c=$(FUZZ_BUILD)/%.o) $(FUZZ_BUILD)/gen/prompts_embed.o
FUZZ_SECONDS ?= 600

$(FUZZ_BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CLANG $<"
	@clang $(FUZZ_CFLAGS) -c -o $@ $<

$(FUZZ_BUILD)/gen/prompts_embed.o: $(BUILD)/gen/prompts_embed.c
	@mkdir -p $(dir $@)
	@clang $(FUZZ_CFLAGS) -c -o $@ $<

$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_OBJ)
	@echo "  LINK $@"
	@clang $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $^ $(PKG_LIBS) -lm

fuzz-build: deps $(FUZZ_BINS)

# Runs every target for FUZZ_SECONDS on a copy of the committed seed corpus; a crash leaves
# its input in $(FUZZ_BUILD)/crashes/ and fails.
fuzz: fuzz-build
	@scripts/fuzz.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# git's list of sources; without git (not installed, or a copy without .git) every .c/.h.
FORMAT_SRC = $(shell git ls-files '*.c' '*.h' 2>/dev/null || \
               find include src approaches eval tests bench -path tests/sdk -prune -o -name '*.[ch]' -print)

format:
	clang-format -i $(FORMAT_SRC)

format-check:
	@test -n "$(FORMAT_SRC)" && clang-format --dry-run --Werror $(FORMAT_SRC) || \
	    { echo "format-check: run 'make format'"; exit 1; }

bench: all
	bench/passthrough.sh

clean:
	rm -rf build build-*

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
