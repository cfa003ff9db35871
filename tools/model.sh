#!/bin/sh
# make model: puts a GPT-2 checkpoint in DIR (default models/gpt2).
# Where there is internet it downloads Hugging Face's `gpt2` (config.json, model.safetensors,
# vocab.json, merges.txt) and validates it with `gpt2-tool info`; offline it writes a random-weight
# model of the 124M shape instead, with a loud warning: its text is meaningless.
# Env: BUILD (binary dir), GPT2D_HF_URL (base URL of the files).
set -u
DIR=${1:-models/gpt2}
BUILD=${BUILD:-build}
URL=${GPT2D_HF_URL:-https://huggingface.co/openai-community/gpt2/resolve/main}
TOOL="$BUILD/gpt2-tool"
if [ -f "$DIR/config.json" ] && "$TOOL" info --model "$DIR" >/dev/null 2>&1; then
    echo "model: $DIR already holds a valid checkpoint"; exit 0
fi
mkdir -p "$DIR"
tmp="$DIR.download"
rm -rf "$tmp" && mkdir -p "$tmp"
ok=1
if command -v curl >/dev/null 2>&1; then
    echo "model: downloading GPT-2 (124M) from $URL ..."
    for f in config.json vocab.json merges.txt model.safetensors; do
        if ! curl -fsSL --connect-timeout 5 --retry 2 -o "$tmp/$f" "$URL/$f"; then ok=0; break; fi
    done
else
    ok=0
fi
if [ "$ok" = 1 ] && "$TOOL" info --model "$tmp"; then
    rm -rf "$DIR" && mv "$tmp" "$DIR"
    echo "model: real GPT-2 weights in $DIR"
    exit 0
fi
rm -rf "$tmp"
echo "############################################################################"
echo "# model: could not download GPT-2 (no internet?). Writing a RANDOM-WEIGHT   #"
echo "# model of the 124M shape to $DIR instead. Its text is MEANINGLESS;      #"
echo "# put a real Hugging Face gpt2 checkpoint there for real text.             #"
echo "############################################################################"
exec "$TOOL" mkmodel --out "$DIR" --layers 12 --embd 768 --heads 12 --ctx 1024 --seed 1
