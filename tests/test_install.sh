#!/bin/sh
# test_install.sh — `make install DESTDIR=...` (tools/install.sh, which the Makefile's install and
# uninstall targets run) produces the expected tree; the generated configuration covers every
# setting and passes --check-config; configuration errors name FILE:LINE; a flag wins over the
# file; every gpt2d flag is in its man page and the man pages render cleanly; `systemd-analyze
# verify` passes on the installed units and `systemd-analyze security` rates gpt2d.service OK or
# better (both skipped, with the reason printed, if systemd-analyze is absent); uninstall removes
# what install put (and PURGE=1 the rest).
# Env: BUILD (binaries), GPT2D_TMP (scratch).
BUILD=${BUILD:-build}
TMP=${GPT2D_TMP:-/tmp}/install-test
rm -rf "$TMP"
mkdir -p "$TMP"
D="$TMP/root"
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL test_install: $*"; }
check() { # check "what" command...
    what=$1
    shift
    if "$@" >"$TMP/last.out" 2>&1; then ok; else bad "$what"; sed 's/^/    /' "$TMP/last.out" | head -20; fi
}

# ---- install into a staging root ----
check "install.sh install into DESTDIR" env PREFIX=/usr/local DESTDIR="$D" BUILD="$BUILD" sh tools/install.sh install
P="$D/usr/local"
for f in bin/gpt2d bin/gpt2d-worker bin/gpt2d-http bin/gpt2c bin/gpt2-tool; do
    check "$f installed, executable" test -x "$P/$f"
done
for f in lib/systemd/system/gpt2d.service lib/systemd/system/gpt2d-worker@.service lib/sysusers.d/gpt2d.conf \
    lib/tmpfiles.d/gpt2d.conf share/man/man8/gpt2d.8 share/man/man8/gpt2d-worker.8 share/man/man8/gpt2d-http.8 share/man/man1/gpt2c.1 \
    share/man/man1/gpt2-tool.1 share/gpt2d/gpt2-tokenizer/vocab.json share/gpt2d/gpt2-tokenizer/merges.txt \
    share/doc/gpt2d/SERVICE.md; do
    check "$f installed" test -s "$P/$f"
done
check "/etc/gpt2d/gpt2d.conf installed" test -s "$D/etc/gpt2d/gpt2d.conf"
check "/var/lib/gpt2d/models created" test -d "$D/var/lib/gpt2d/models"
check "units have their paths filled in" sh -c "! grep -q '@[A-Z]*@' '$P'/lib/systemd/system/*.service"
check "ExecStart runs the installed gpt2d with the installed config" \
    grep -qx 'ExecStart=/usr/local/bin/gpt2d --config /etc/gpt2d/gpt2d.conf' "$P/lib/systemd/system/gpt2d.service"
check "unit is Type=notify with a watchdog" sh -c "grep -qx 'Type=notify' '$P/lib/systemd/system/gpt2d.service' &&
    grep -q '^WatchdogSec=' '$P/lib/systemd/system/gpt2d.service'"

# ---- the generated configuration ----
CONF="$D/etc/gpt2d/gpt2d.conf"
GPT2D="$P/bin/gpt2d"
check "config serves /var/lib/gpt2d/models/gpt2" grep -qx 'model = /var/lib/gpt2d/models/gpt2' "$CONF"
check "config listens on /run/gpt2d/client.sock" grep -qx 'listen = ipc:///run/gpt2d/client.sock' "$CONF"
flags=$("$GPT2D" --help | sed -n 's/^  --\([a-z0-9-]*\) .*/\1/p' | grep -v '^config$\|^check-config$\|^print-config$\|^help,$')
sed 's/\\-/-/g; s/\\f[BIR]//g' "$P/share/man/man8/gpt2d.8" > "$TMP/gpt2d.8.txt" # roff escapes off
nflags=0
for k in $flags; do
    nflags=$((nflags + 1))
    check "config has key '$k', commented with its help" grep -Eq "^#?$k =( |\$)" "$CONF"
    check "gpt2d.8 documents --$k" grep -Eq -- "--$k( |\$)" "$TMP/gpt2d.8.txt"
done
check "--help lists at least 20 settings ($nflags)" test "$nflags" -ge 20
check "commented lines: 'key = default'" grep -qx '#max-queue = 256' "$CONF"
MODEL="$TMP/model"
check "gpt2-tool mkmodel (installed tokenizer path or --tokenizer)" "$P/bin/gpt2-tool" mkmodel --out "$MODEL" \
    --layers 1 --embd 64 --heads 2 --ctx 64 --seed 1 --tokenizer data/gpt2-tokenizer
check "--check-config accepts the installed file (model given)" "$GPT2D" --config "$CONF" --model "$MODEL" --check-config
"$GPT2D" --config "$CONF" --check-config >"$TMP/nomodel.out" 2>&1
rc=$?
check "--check-config without the model exits 2" test "$rc" = 2
check "... and says the model's config.json is missing" grep -q 'models/gpt2/config.json' "$TMP/nomodel.out"

# ---- configuration errors and precedence ----
printf '# a comment\nworkers = 1\n\nmax-queue = lots\n' > "$TMP/bad1.conf"
"$GPT2D" --config "$TMP/bad1.conf" --model "$MODEL" --check-config >"$TMP/bad1.out" 2>&1
rc=$?
check "a bad value exits 2" test "$rc" = 2
check "... reported as FILE:LINE: message" grep -q "^$TMP/bad1.conf:4: max-queue wants an integer" "$TMP/bad1.out"
printf 'workers = 1\nwrokers = 2\n' > "$TMP/bad2.conf"
"$GPT2D" --config "$TMP/bad2.conf" --check-config >"$TMP/bad2.out" 2>&1
check "an unknown key is reported with its line" grep -q "bad2.conf:2: unknown key 'wrokers'" "$TMP/bad2.out"
printf 'max-queue = 1\nmax-queue = 2\n' > "$TMP/bad3.conf"
"$GPT2D" --config "$TMP/bad3.conf" --check-config >"$TMP/bad3.out" 2>&1
check "a key set twice is reported" grep -q "bad3.conf:2: 'max-queue' is already set on line 1" "$TMP/bad3.out"
printf 'just words\n' > "$TMP/bad4.conf"
"$GPT2D" --config "$TMP/bad4.conf" --check-config >"$TMP/bad4.out" 2>&1
check "a line without '=' is reported" grep -q "bad4.conf:1: expected 'key = value'" "$TMP/bad4.out"
"$GPT2D" --config "$TMP/missing.conf" --check-config >"$TMP/bad5.out" 2>&1
check "a missing file is reported" grep -q "missing.conf: No such file" "$TMP/bad5.out"
printf 'max-queue = 7\nblas = yes\nlog-level = "debug"\nworkers = 0\n' > "$TMP/good.conf"
"$GPT2D" --config "$TMP/good.conf" --max-queue 9 --print-config >"$TMP/eff.out" 2>&1
check "a flag wins over the file" grep -qx 'max-queue = 9' "$TMP/eff.out"
check "file values apply (bool, quoted string)" sh -c "grep -qx 'blas = true' '$TMP/eff.out' &&
    grep -qx 'log-level = debug' '$TMP/eff.out'"
"$GPT2D" --print-config --workers 0 > "$TMP/regen.conf" 2>&1
check "the printed file parses back" "$GPT2D" --config "$TMP/regen.conf" --check-config

# ---- man pages ----
for m in "$P"/share/man/man1/*.1 "$P"/share/man/man8/*.8; do
    if command -v man >/dev/null 2>&1; then
        MANWIDTH=100 man -l --warnings "$m" >/dev/null 2>"$TMP/man.err"
        check "$(basename "$m") renders without warnings" test ! -s "$TMP/man.err"
    fi
done

# ---- systemd-analyze ----
if command -v systemd-analyze >/dev/null 2>&1; then
    # the units as installed, with /usr/local/bin pointing into the staging root
    mkdir -p "$TMP/units"
    for u in gpt2d.service gpt2d-worker@.service; do
        sed "s|/usr/local/bin/|$P/bin/|g" "$P/lib/systemd/system/$u" > "$TMP/units/$u"
    done
    cp "$TMP/units/gpt2d-worker@.service" "$TMP/units/gpt2d-worker@broker.service"
    MANPATH="$P/share/man" systemd-analyze verify "$TMP/units/gpt2d.service" \
        "$TMP/units/gpt2d-worker@broker.service" >"$TMP/verify.out" 2>&1
    rc=$?
    check "systemd-analyze verify passes on gpt2d.service and gpt2d-worker@.service" test "$rc" = 0 -a ! -s "$TMP/verify.out"
    [ "$rc" = 0 ] || cat "$TMP/verify.out"
    systemd-analyze security --offline=true --no-pager "$TMP/units/gpt2d.service" >"$TMP/security.out" 2>&1
    line=$(grep 'Overall exposure level' "$TMP/security.out")
    echo "   systemd-analyze security: $line"
    score=$(echo "$line" | sed -n 's/.*: \([0-9.]*\) .*/\1/p')
    check "systemd-analyze security rates gpt2d.service OK or better (exposure ${score:-?})" \
        sh -c "echo '$line' | grep -Eq ' (OK|SAFE|PERFECT)'"
else
    echo "   SKIP systemd-analyze checks: systemd-analyze is not installed"
fi

# ---- uninstall ----
check "install.sh uninstall" env PREFIX=/usr/local DESTDIR="$D" BUILD="$BUILD" sh tools/install.sh uninstall
left=$(find "$D" -type f | sed "s|^$D||" | sort | tr '\n' ' ')
check "uninstall keeps only the configuration ($left)" test "$left" = "/etc/gpt2d/gpt2d.conf "
check "uninstall keeps /var/lib/gpt2d" test -d "$D/var/lib/gpt2d/models"
check "install again keeps the edited config, writes gpt2d.conf.new" sh -c "
    echo 'workers = 3' >> '$CONF' && PREFIX=/usr/local DESTDIR='$D' BUILD='$BUILD' sh tools/install.sh install &&
    grep -qx 'workers = 3' '$CONF' && test -s '$CONF.new'"
check "uninstall PURGE=1" env PREFIX=/usr/local DESTDIR="$D" BUILD="$BUILD" PURGE=1 sh tools/install.sh uninstall
left=$(find "$D" -type f | wc -l)
check "PURGE=1 leaves no file ($left)" test "$left" = 0

rm -rf "$TMP"
echo "test_install: $pass passed, $fail failed"
[ "$fail" = 0 ]
