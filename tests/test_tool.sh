#!/bin/sh
# test_tool.sh — gpt2-tool's commands as a user runs them: mkmodel is deterministic, tokenize and
# detokenize give the published ids and exact bytes, logits --out writes V little-endian floats,
# info and generate refuse a broken model directory with a message naming the file.
BUILD=${BUILD:-build}
T="$BUILD/gpt2-tool"
D=${GPT2D_TMP:-/tmp}/tool-test.$$
mkdir -p "$D"
trap 'rm -rf "$D"' EXIT INT TERM
pass=0
fail=0
ok() { if [ "$1" = 0 ]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $2"; fi; }

"$T" mkmodel --out "$D/a" --layers 2 --embd 64 --heads 2 --ctx 64 --seed 5 2>/dev/null
"$T" mkmodel --out "$D/b" --layers 2 --embd 64 --heads 2 --ctx 64 --seed 5 2>/dev/null
"$T" mkmodel --out "$D/c" --layers 2 --embd 64 --heads 2 --ctx 64 --seed 6 2>/dev/null
cmp -s "$D/a/model.safetensors" "$D/b/model.safetensors"; ok $? "mkmodel: same seed, same bytes"
cmp -s "$D/a/model.safetensors" "$D/c/model.safetensors"; [ $? = 1 ]; ok $? "mkmodel: other seed, other bytes"
"$T" info --model "$D/a" | grep -q "2 layers, 64 wide, 2 heads, ctx 64"; ok $? "info prints the shape"

ids=$(printf 'Hello, world!' | "$T" tokenize --model "$D/a")
[ "$ids" = "15496 11 995 0" ]; ok $? "tokenize 'Hello, world!' -> 15496 11 995 0 (got '$ids')"
ids=$(printf 'a<|endoftext|>b' | "$T" tokenize --model "$D/a" --allow-special)
[ "$ids" = "64 50256 65" ]; ok $? "tokenize --allow-special makes <|endoftext|> id 50256 (got '$ids')"
out=$(echo "15496 11 995 0" | "$T" detokenize --model "$D/a")
[ "$out" = "Hello, world!" ]; ok $? "detokenize -> 'Hello, world!'"
echo "447 247" | "$T" detokenize --model "$D/a" > "$D/bytes"
[ "$(od -An -tx1 "$D/bytes" | tr -d ' \n')" = "e28099" ]; ok $? "detokenize gives exact bytes (e2 80 99)"
echo "99999" | "$T" detokenize --model "$D/a" 2> "$D/err"; [ $? != 0 ] && grep -q "out of range" "$D/err"; ok $? "detokenize refuses an id out of range"
printf '\377' | "$T" tokenize --model "$D/a" 2> "$D/err"; [ $? != 0 ] && grep -q "UTF-8" "$D/err"; ok $? "tokenize refuses invalid UTF-8"

"$T" logits --model "$D/a" --ids 464,2068,7586 --out "$D/logits.bin"
[ "$(stat -c %s "$D/logits.bin")" = $((50257 * 4)) ]; ok $? "logits --out writes 50257 float32"
n=$("$T" logits --model "$D/a" --ids 464,2068,7586 | wc -l)
[ "$n" = 20 ]; ok $? "logits prints the top 20"
first=$("$T" logits --model "$D/a" --ids 464,2068,7586 | head -1 | cut -d' ' -f1)
gen=$("$T" generate --model "$D/a" --prompt "The quick brown" -n 1 --ignore-eos | "$T" tokenize --model "$D/a")
want=$(echo "$first" | "$T" detokenize --model "$D/a" | "$T" tokenize --model "$D/a")
[ "$gen" = "$want" ]; ok $? "greedy generate's first token is logits' top-1 ($gen vs $want)"
s1=$("$T" generate --model "$D/a" --prompt "Hi" -n 12 --temperature 1 --seed 3 | od -An -tx1)
s2=$("$T" generate --model "$D/a" --prompt "Hi" -n 12 --temperature 1 --seed 3 | od -An -tx1)
[ "$s1" = "$s2" ]; ok $? "sampling with a seed is reproducible"

cp -r "$D/a" "$D/broken"
head -c 1000 "$D/a/model.safetensors" > "$D/broken/model.safetensors"
"$T" info --model "$D/broken" 2> "$D/err"; [ $? != 0 ] && grep -q "model.safetensors" "$D/err"; ok $? "info refuses a truncated checkpoint naming the file"
"$T" generate --model "$D/broken" --prompt hi -n 2 2> "$D/err"; [ $? != 0 ] && grep -q "model.safetensors" "$D/err"; ok $? "generate refuses it too"
"$T" generate --model "$D/a" --prompt hi -n abc 2>/dev/null; [ $? = 2 ]; ok $? "a malformed flag is a usage error (exit 2)"
"$T" frobnicate 2>/dev/null; [ $? = 2 ]; ok $? "an unknown command is a usage error (exit 2)"

echo "test_tool: $pass passed, $fail failed"
[ "$fail" = 0 ]
