# gpt2d — hand-written Makefile.
#   make            build every binary into build/
#   make test       build and run the whole test suite (ends with "N passed, N failed")
#   make test SAN=1 the same with AddressSanitizer + UndefinedBehaviorSanitizer (into build/san/)
#   make run        start the service on the default model (models/gpt2, made by `make model`)
#   make bench      benchmarks on the 124M-shaped model
#   make model      fetch HF gpt2 where there is internet, else make a random 124M-shaped model
#   make fuzz       libFuzzer on the protocol decoder and the tokenizer (FUZZ_TIME s each)
#   make soak       15 minutes at 64 concurrent through gpt2d (SOAK_S to change)
#   make install    PREFIX (/usr/local), DESTDIR; make uninstall
# Missing Debian packages are installed by tools/deps.sh (run once, as root) before the first build.

CC      ?= gcc
SAN     ?= 0
BUILD   ?= build
ifeq ($(SAN),1)
BUILD   := build/san
endif

# Where gpt2-tool mkmodel finds the tokenizer files (install overrides it).
DATADIR ?= $(CURDIR)/data

# -ffp-contract=off: no silent a*b+c fusion, so every float sum is exactly the code's order.
# The inference library's rooms under worker/ (worker_main.c, the process, stays at the top).
ENGINE_DIRS := worker/kernels worker/model worker/engine worker/tokenizer
ENGINE_INC  := -Iworker $(addprefix -I,$(ENGINE_DIRS))

CFLAGS  := -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror \
           -ffp-contract=off -fno-strict-aliasing -MMD -MP $(ENGINE_INC) -Iproto \
           -I/usr/include/x86_64-linux-gnu/openblas-pthread -DGPT2D_DATADIR=\"$(DATADIR)\"
LDLIBS  := -lopenblas -lpcre2-8 -ljansson -lzmq -lmsgpackc -lsystemd -lpthread -lm
HTTP_LDLIBS := -lmicrohttpd
LDFLAGS :=
ifeq ($(SAN),1)
CFLAGS  += -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=address,undefined
endif

DEPS_OK := build/.deps-ok
# The HTTP tests' npm packages (tests/http: openai SDK, playwright-core), `npm ci` from the lockfile.
NPM_OK  := tests/http/node_modules/.package-lock.json
.DEFAULT_GOAL := all

# --version prints the git revision: `git describe --always --dirty`, "unknown" outside git (or
# GIT_REV=... from a release script). Only proto_version.o sees it; it is rebuilt when it changes.
ifeq ($(origin GIT_REV),undefined)
GIT_REV := $(shell git describe --always --dirty 2>/dev/null || echo unknown)
endif
GIT_REV_FILE := $(BUILD)/.git-rev
$(shell mkdir -p $(BUILD) && [ "$$(cat $(GIT_REV_FILE) 2>/dev/null)" = "$(GIT_REV)" ] || echo "$(GIT_REV)" > $(GIT_REV_FILE))
$(BUILD)/obj/proto/proto_version.o: $(GIT_REV_FILE)
$(BUILD)/obj/proto/proto_version.o: CFLAGS += -DGPT2D_GIT_REV=\"$(GIT_REV)\"

ENGINE_SRC := $(wildcard $(addsuffix /*.c,$(ENGINE_DIRS)))
PROTO_SRC  := $(wildcard proto/*.c)
ENGINE_OBJ := $(ENGINE_SRC:%.c=$(BUILD)/obj/%.o)
PROTO_OBJ  := $(PROTO_SRC:%.c=$(BUILD)/obj/%.o)

TEST_SRC   := $(wildcard tests/test_*.c)
TEST_BIN   := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
BENCH_SRC  := $(wildcard bench/bench_*.c)
BENCH_BIN  := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

BINS := $(BUILD)/gpt2-tool
ifneq ($(wildcard daemon/*.c),)
BINS += $(BUILD)/gpt2d
endif
ifneq ($(wildcard worker/worker_main.c),)
BINS += $(BUILD)/gpt2d-worker
endif
ifneq ($(wildcard client/*.c),)
BINS += $(BUILD)/gpt2c
endif
ifneq ($(wildcard http/*.c),)
BINS += $(BUILD)/gpt2d-http
endif

.PHONY: all deps test bench run model clean fuzz install uninstall soak
all: $(BINS)

deps: $(DEPS_OK) $(NPM_OK)
$(DEPS_OK): tools/deps.sh
	@sh tools/deps.sh
	@mkdir -p build && touch $@

$(NPM_OK): tests/http/package-lock.json | $(DEPS_OK)
	@sh tools/deps.sh npm

# Objects depend on this Makefile too: it holds their flags (a flag change rebuilds, never mixes).
$(BUILD)/obj/%.o: %.c Makefile | $(DEPS_OK)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# The engine uses AVX2 + FMA + F16C: only its objects (and the benchmarks, test_mm and test_attention, which call
# its inline vector helpers) are built with them. gpt2d, gpt2c, the protocol, every main() and the scalar
# kernels (the portable baseline) are not, so they run anywhere; worker/kernels/cpu.c checks the
# CPU first thing in gpt2d-worker and gpt2-tool and says what it lacks (tests/test_isa.sh).
ISA_FLAGS := -mavx2 -mfma -mf16c
ISA_OBJ    = $(filter-out $(BUILD)/obj/worker/kernels/cpu.o $(BUILD)/obj/worker/kernels/%_scalar.o,$(ENGINE_OBJ)) \
             $(BENCH_SRC:%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/tests/test_mm.o $(BUILD)/obj/tests/test_attention.o
$(ISA_OBJ): CFLAGS += $(ISA_FLAGS)
# The AVX-512 family, alone with its flags (chosen at run time only on a CPU that has them).
$(BUILD)/obj/worker/kernels/%_avx512.o: CFLAGS += -mavx512f -mavx512bw -mavx512vl -mavx512vnni

$(BUILD)/libengine.a: $(ENGINE_OBJ)
	@rm -f $@ && ar rcs $@ $^
$(BUILD)/libproto.a: $(PROTO_OBJ)
	@rm -f $@ && ar rcs $@ $^ && true

LIB_ENGINE := $(BUILD)/libengine.a
LIB_PROTO  := $(if $(PROTO_SRC),$(BUILD)/libproto.a,)

$(BUILD)/gpt2-tool: $(BUILD)/obj/tools/gpt2_tool.o $(LIB_ENGINE) $(LIB_PROTO)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@
$(BUILD)/gpt2d-worker: $(BUILD)/obj/worker/worker_main.o $(LIB_ENGINE) $(LIB_PROTO)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@
$(BUILD)/gpt2d: $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard daemon/*.c)) $(LIB_PROTO)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@
$(BUILD)/gpt2c: $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard client/*.c)) $(LIB_PROTO)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

# gpt2d-http: the HTTP gateway (libmicrohttpd); the status page is compiled in from http/status.html.
HTTP_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard http/*.c)) $(BUILD)/obj/daemon/table.o \
            $(BUILD)/obj/gen/status_html.o
$(BUILD)/obj/http/%.o: CFLAGS += -Idaemon -Ihttp
$(BUILD)/gen/status_html.c: http/status.html | $(DEPS_OK)
	@mkdir -p $(dir $@)
	cd http && xxd -i status.html > $(abspath $@).tmp && mv $(abspath $@).tmp $(abspath $@)
$(BUILD)/obj/gen/status_html.o: $(BUILD)/gen/status_html.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@
$(BUILD)/gpt2d-http: $(HTTP_OBJ) $(LIB_PROTO)
	$(CC) $(LDFLAGS) $^ $(HTTP_LDLIBS) $(LDLIBS) -o $@

$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(LIB_ENGINE) $(LIB_PROTO)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@
# test_config exercises the daemon's settings (daemon/config.c) and the shared engine table.
$(BUILD)/tests/test_config: $(BUILD)/obj/tests/test_config.o $(BUILD)/obj/daemon/config.o $(LIB_PROTO)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@
# test_priority also unit-tests the broker's dispatch order (daemon/squeue.c).
$(BUILD)/tests/test_priority: $(BUILD)/obj/tests/test_priority.o $(BUILD)/obj/daemon/squeue.o $(LIB_ENGINE) $(LIB_PROTO)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@
$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(LIB_ENGINE) $(LIB_PROTO)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@
# the HTTP client side of bench_http (gpt2d-http vs ZeroMQ) is libcurl's
$(BUILD)/bench/bench_http: LDLIBS += -lcurl

# The suite: every tests/test_*.c binary plus tests/*.sh, run by tests/run.sh,
# which ends with the total "N passed, N failed" line and fails on any failure.
test: all $(TEST_BIN) $(NPM_OK)
	@BUILD=$(BUILD) SAN=$(SAN) sh tests/run.sh $(TEST_BIN)

bench: all $(BENCH_BIN)
	@BUILD=$(BUILD) sh bench/run.sh

# The default model: HF gpt2 where there is internet, else a random 124M-shaped one.
model: all
	@BUILD=$(BUILD) sh tools/model.sh models/gpt2

run: all
	@test -f models/gpt2/config.json || BUILD=$(BUILD) sh tools/model.sh models/gpt2
	@BUILD=$(BUILD) sh tools/run.sh models/gpt2

# Install (PREFIX, DESTDIR): binaries, systemd units, /etc/gpt2d/gpt2d.conf, man pages, tokenizer.
PREFIX ?= /usr/local
install: all
	@PREFIX=$(PREFIX) DESTDIR=$(DESTDIR) BUILD=$(BUILD) sh tools/install.sh install
uninstall:
	@PREFIX=$(PREFIX) DESTDIR=$(DESTDIR) BUILD=$(BUILD) sh tools/install.sh uninstall

# Fuzz the protocol decoder and the tokenizer (libFuzzer, clang): FUZZ_TIME seconds per target;
# FUZZ_TARGET = proto, bpe or all. Corpus in fuzz-corpus/.
FUZZ_TIME ?= 60
FUZZ_TARGET ?= all
fuzz: | $(DEPS_OK)
	@FUZZ_TIME=$(FUZZ_TIME) sh fuzz/run.sh $(FUZZ_TARGET)

# A bounded soak: gpt2d with 2 workers at 64 concurrent for SOAK_S seconds (default 15 min);
# prints RSS of broker and workers at start and end, and lost requests (must be 0).
SOAK_S ?= 900
soak: all $(BUILD)/tests/soak
	@BUILD=$(BUILD) SOAK_S=$(SOAK_S) GPT2D_TMP=$$(mktemp -d /tmp/gpt2d-soak.XXXXXX) $(BUILD)/tests/soak

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)
