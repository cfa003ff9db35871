#!/bin/sh
# test_isa.sh — on a CPU without AVX2/FMA/F16C, gpt2d and gpt2c must still run, and gpt2d-worker
# and gpt2-tool must say what the CPU lacks instead of dying with SIGILL. So only the engine's
# objects are built with -mavx2 -mfma -mf16c (Makefile ISA_FLAGS): this test disassembles the
# binaries and objects that must run anywhere and finds no VEX-encoded (AVX) instruction in them.
BUILD=${BUILD:-build}
pass=0
fail=0
ok() { if [ "$1" = 0 ]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $2"; fi; }
# VEX instructions use ymm registers, or a v-prefixed mnemonic on xmm registers
avx() { objdump -d --no-show-raw-insn "$1" | grep -E '%ymm|[[:space:]]v[a-z0-9]+[[:space:]].*%xmm' | head -n 3; }

if ! command -v objdump > /dev/null; then echo "test_isa: objdump missing"; echo "test_isa: 0 passed, 1 failed"; exit 1; fi
for f in "$BUILD/gpt2d" "$BUILD/gpt2c" "$BUILD/obj/worker/kernels/cpu.o" "$BUILD"/obj/worker/kernels/*_scalar.o "$BUILD/obj/worker/worker_main.o" \
         "$BUILD/obj/tools/gpt2_tool.o" "$BUILD"/obj/proto/*.o "$BUILD"/obj/daemon/*.o "$BUILD"/obj/client/*.o; do
    [ -e "$f" ] || { ok 1 "$f not built"; continue; }
    found=$(avx "$f")
    [ -z "$found" ]; ok $? "$f has AVX instructions, which would die with SIGILL on an old CPU: $found"
done
# and the engine does use them (the flags reach it)
found=$(avx "$BUILD/obj/worker/kernels/matmul_avx2.o")
[ -n "$found" ]; ok $? "the kernels are built with the ISA flags"
# the CPU check runs first: gpt2d-worker and gpt2-tool start (here, on a CPU that has it all)
"$BUILD/gpt2-tool" info --model /nonexistent > /dev/null 2>&1
[ $? != 132 ]; ok $? "gpt2-tool runs (no SIGILL)"
echo "test_isa: $pass passed, $fail failed"
[ "$fail" = 0 ]
