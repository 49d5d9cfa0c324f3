# am2z - build, test, examples, benchmarks. `make test` is what CI runs.
CC      ?= cc
CFLAGS  ?= -O2
LDFLAGS ?=
WARN    := -Wall -Wextra -Wpedantic -Werror
LIBS    := -pthread -lm
B       := build

TESTS    := $(patsubst tests/%.c,%,$(wildcard tests/test_*.c))
EXAMPLES := $(patsubst examples/%.c,%,$(wildcard examples/*.c))
BENCHES  := $(patsubst bench/%.c,%,$(wildcard bench/*.c))
HEADERS  := am2z.h am2z_resp.h

.PHONY: all test demo examples bench bench-vs-bullmq fuzz clean symbols check check-tsan \
        portability size chaos

all: examples

# Everything CI runs; stops at the first failure and prints "N passed, N failed".
test:
	@sh tests/run.sh

demo: $(B)/examples/order
	./$(B)/examples/order

examples: $(addprefix $(B)/examples/,$(EXAMPLES))

$(B)/examples/%: examples/%.c $(HEADERS) | $(B)/examples
	$(CC) -std=c99 $(WARN) $(CFLAGS) -I. -o $@ $< $(LDFLAGS) $(LIBS)

# Every bench, then the second half of issue 11's measures: the local runtime beside two
# CPU-bound threads per CPU, the queue against its floor, and a million queue jobs' memory.
bench: $(addprefix $(B)/bench/,$(BENCHES))
	@for b in $^; do echo "== $$b"; ./$$b || exit 1; done
	@for m in "local --contend" "queue --floor" "queue --soak"; do \
	  echo "== $(B)/bench/$$m"; ./$(B)/bench/$$m || exit 1; done

$(B)/bench/%: bench/%.c bench/bench.h $(HEADERS) | $(B)/bench
	$(CC) -std=c99 $(WARN) $(CFLAGS) -I. -o $@ $< $(LDFLAGS) $(LIBS)

# am2z's queue runtime against BullMQ 6.7 in one run (needs redis-server, node, npm);
# run from the repository root.
bench-vs-bullmq: $(B)/bench/queue
	./$(B)/bench/queue

# One test program with ASan+UBSan, for a quick edit-run loop: make check T=json
check:
	@mkdir -p $(B)
	$(CC) -std=c99 $(WARN) -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all \
	  -fno-omit-frame-pointer -I. -o $(B)/check_$(T) tests/test_$(T).c tests/impl.c $(LIBS) \
	  && ./$(B)/check_$(T)
check-tsan:
	@mkdir -p $(B)
	clang -std=c99 $(WARN) -O1 -g -fsanitize=thread -I. -o $(B)/tsan_$(T) tests/test_$(T).c \
	  tests/impl.c $(LIBS) && ./$(B)/tsan_$(T)

# Every exported symbol must carry the am2z prefix, in the normal and the static build.
symbols:
	@sh tests/symbols.sh "$(CC)"

fuzz:
	@sh tests/fuzz.sh

# The unit tests that need no Redis on i386, armhf, aarch64 and s390x (qemu-user), and the
# examples as static musl programs; PORTABILITY_TARGETS="armhf s390x" picks some.
portability:
	@sh tests/portability.sh

# Code size per part (-Os, --gc-sections), x86-64 and armhf: the README's size table.
size:
	@sh tests/size.sh

# kill -9 of workers every 2 s and of Redis (restarted from its AOF) 3 times while 100,000
# executions run; prints submitted / answered / wrong / failed / lost / duplicated.
# CHAOS_JOBS=... etc. change it (see tests/chaos.sh).
chaos:
	@sh tests/chaos.sh

$(B)/examples $(B)/bench:
	mkdir -p $@

clean:
	rm -rf $(B)
