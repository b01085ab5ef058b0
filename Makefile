# frugal's front door. On a fresh Debian 12 machine `make demo` and `make test` install what is
# missing, build, and run; every other target builds on the same steps.

BUILD_DIR    ?= build
SAN_DIR      ?= build-san
FUZZ_DIR     ?= build-fuzz
JOBS         ?= 2
FUZZ_SECONDS ?= 60
BUILD_TYPE   ?= RelWithDebInfo

# Boost 1.81 explicitly: Debian 12's default libboost-dev is 1.74, which has no Boost.JSON.
PACKAGES := cmake ninja-build g++ clang libclang-rt-14-dev ccache \
            libboost1.81-dev libboost-json1.81-dev libboost-test1.81-dev \
            libssl-dev libsqlite3-dev libbenchmark-dev libcli11-dev python3 \
            libhiredis-dev redis-server iproute2

CMAKE_CONFIGURE = cmake -S . -G Ninja -Wno-dev

.PHONY: all deps build test demo bench bench-peers sanitize fuzz lint format clean

all: build

deps:
	@tools/deps.sh $(PACKAGES)

build: deps
	@[ -f $(BUILD_DIR)/build.ninja ] || $(CMAKE_CONFIGURE) -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)
	@cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	ctest --test-dir $(BUILD_DIR) --output-on-failure -j $(JOBS)

# The whole idea in one run against the in-process simulator: a streamed escalation, a batch
# under a cap the guard enforces, the report, the reconciliation and an HTML dashboard.
demo: build
	$(BUILD_DIR)/bin/frugal demo --out $(BUILD_DIR)/demo

bench: build
	$(BUILD_DIR)/bin/frugal_bench --results=$(BUILD_DIR)/bench/results.json
	$(BUILD_DIR)/bin/frugal_sim_bench --results=$(BUILD_DIR)/bench/results.json
	$(BUILD_DIR)/bin/frugal_client_bench --results=$(BUILD_DIR)/bench/results.json
	@cat $(BUILD_DIR)/bench/results.json

# frugal beside the openai Node SDK, @openrouter/sdk, eventsource-parser and wrk, on one nginx
# serving canned OpenRouter responses (docs/benchmarks.md). PEERS_REPS sets the repetitions.
# Node may come from elsewhere than Debian (its npm then is not a Debian package): only a
# missing `node` or `npm` command asks apt for them.
bench-peers: build
	@tools/deps.sh nginx-light wrk curl
	@command -v node >/dev/null && command -v npm >/dev/null || tools/deps.sh nodejs npm
	benchmarks/peers/run.sh $(BUILD_DIR)

sanitize: deps
	@[ -f $(SAN_DIR)/build.ninja ] || $(CMAKE_CONFIGURE) -B $(SAN_DIR) -DCMAKE_BUILD_TYPE=Debug \
		-DFRUGAL_SANITIZE=ON -DFRUGAL_BUILD_BENCHMARKS=OFF -DFRUGAL_BUILD_EXAMPLES=OFF
	@cmake --build $(SAN_DIR) -j $(JOBS)
	ASAN_OPTIONS=detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 SSE_DIFF_STREAMS=500 FRUGAL_EDGE_RUNS=500 \
		ctest --test-dir $(SAN_DIR) --output-on-failure -j $(JOBS)

fuzz: deps
	@[ -f $(FUZZ_DIR)/build.ninja ] || CXX=clang++ $(CMAKE_CONFIGURE) -B $(FUZZ_DIR) \
		-DCMAKE_BUILD_TYPE=RelWithDebInfo -DFRUGAL_FUZZ=ON -DFRUGAL_BUILD_TESTS=OFF \
		-DFRUGAL_BUILD_BENCHMARKS=OFF -DFRUGAL_BUILD_EXAMPLES=OFF
	@cmake --build $(FUZZ_DIR) -j $(JOBS) --target frugal_sse_fuzz frugal_codec_fuzz frugal_http_fuzz \
		frugal_outcomes_fuzz
	@mkdir -p $(FUZZ_DIR)/corpus/sse $(FUZZ_DIR)/corpus/codec $(FUZZ_DIR)/corpus/http \
		$(FUZZ_DIR)/corpus/outcomes $(FUZZ_DIR)/artifacts
	$(FUZZ_DIR)/bin/frugal_sse_fuzz -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
		-artifact_prefix=$(FUZZ_DIR)/artifacts/ $(FUZZ_DIR)/corpus/sse tests/fuzz/corpus/sse
	$(FUZZ_DIR)/bin/frugal_codec_fuzz -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
		-artifact_prefix=$(FUZZ_DIR)/artifacts/ $(FUZZ_DIR)/corpus/codec tests/fuzz/corpus/codec
	$(FUZZ_DIR)/bin/frugal_http_fuzz -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
		-artifact_prefix=$(FUZZ_DIR)/artifacts/ $(FUZZ_DIR)/corpus/http tests/fuzz/corpus/http
	$(FUZZ_DIR)/bin/frugal_outcomes_fuzz -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
		-artifact_prefix=$(FUZZ_DIR)/artifacts/ $(FUZZ_DIR)/corpus/outcomes tests/fuzz/corpus/outcomes

SOURCES = $(shell git ls-files '*.cpp' '*.hpp')

lint: build
	clang-format --dry-run --Werror $(SOURCES)
	clang-tidy -p $(BUILD_DIR) --quiet $(filter-out tests/fuzz/%,$(filter %.cpp,$(SOURCES)))

format:
	clang-format -i $(SOURCES)

clean:
	rm -rf $(BUILD_DIR) $(SAN_DIR) $(FUZZ_DIR)
