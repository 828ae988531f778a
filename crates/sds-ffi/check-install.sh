#!/usr/bin/env bash
# Installs libsds with the Makefile beside this script into scratch prefixes and builds a C
# program against each install through pkg-config only: once linked to libsds.so, once to
# libsds.a. Each program wraps a message and must print its wire bytes. Run by .ci/run.
#
#   bash crates/sds-ffi/check-install.sh [PROFILE]    # PROFILE: dev (default) or release
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
profile=${1:-dev}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat > "$work/wrap.c" <<'C'
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <libsds.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done = PTHREAD_COND_INITIALIZER;
static int answered = 0, ret = -1;
static char result[4096];

static void on_result(int callerRet, const char* msg, size_t len, void* userData) {
    (void)userData;
    pthread_mutex_lock(&lock);
    ret = callerRet;
    snprintf(result, sizeof result, "%.*s", (int)len, msg);
    answered = 1;
    pthread_cond_signal(&done);
    pthread_mutex_unlock(&lock);
}

static void ignore(int callerRet, const char* msg, size_t len, void* userData) {
    (void)callerRet; (void)msg; (void)len; (void)userData;
}

int main(void) {
    void* ctx = SdsNewReliabilityManager(ignore, NULL);
    if (ctx == NULL) { fprintf(stderr, "no context\n"); return 1; }
    char content[] = "hello";
    if (SdsWrapOutgoingMessage(ctx, content, 5, "m1", "ch", on_result, NULL) != RET_OK) {
        fprintf(stderr, "wrap refused\n");
        return 1;
    }
    pthread_mutex_lock(&lock);
    while (!answered) pthread_cond_wait(&done, &lock);
    pthread_mutex_unlock(&lock);
    if (ret != RET_OK) { fprintf(stderr, "wrap failed: %s\n", result); return 1; }
    printf("%s\n", result);
    return SdsCleanupReliabilityManager(ctx, ignore, NULL) == RET_OK ? 0 : 1;
}
C

# pc PREFIX ARGS...: pkg-config against the install under PREFIX only.
pc() {
    local prefix=$1
    shift
    PKG_CONFIG_PATH="$prefix/lib/pkgconfig" PKG_CONFIG_LIBDIR="$prefix/lib/pkgconfig" \
        pkg-config "$@" libsds
}

check_output() {
    # The wire bytes of message "m1" on channel "ch", as decimal numbers: they start with the
    # message id field (0x0a, length 2, "m1").
    local out=$1
    case "$out" in
        10,2,109,49,*) ;;
        *) echo "unexpected wrap result: $out" >&2; exit 1 ;;
    esac
}

version=$(cargo pkgid --manifest-path "$here/Cargo.toml" -p sds-ffi | sed 's/.*[#@]//')

echo "-- make install (shared and static), then a program linked to libsds.so"
make -s -C "$here" install PROFILE="$profile" PREFIX="$work/both" >/dev/null 2>"$work/make.log" \
    || { cat "$work/make.log" >&2; exit 1; }
test -f "$work/both/include/libsds.h"
test "$(pc "$work/both" --modversion)" = "$version"
cc -o "$work/wrap-shared" "$work/wrap.c" $(pc "$work/both" --cflags --libs) \
    -Wl,-rpath,"$(pc "$work/both" --variable=libdir)"
readelf -d "$work/wrap-shared" | grep -q 'NEEDED.*libsds\.so\.' \
    || { echo "the program does not need libsds.so by its soname" >&2; exit 1; }
check_output "$("$work/wrap-shared")"

echo "-- make install LIBS=static, then a program linked to libsds.a with pkg-config --static"
make -s -C "$here" install PROFILE="$profile" PREFIX="$work/static" LIBS=static >/dev/null \
    2>"$work/make.log" || { cat "$work/make.log" >&2; exit 1; }
test ! -e "$work/static/lib/libsds.so"
cc -o "$work/wrap-static" "$work/wrap.c" $(pc "$work/static" --static --cflags --libs)
if readelf -d "$work/wrap-static" | grep -q 'NEEDED.*libsds'; then
    echo "the static program needs libsds.so" >&2
    exit 1
fi
check_output "$("$work/wrap-static")"

echo "-- make uninstall"
make -s -C "$here" uninstall PREFIX="$work/both" PROFILE="$profile" >/dev/null
test -z "$(find "$work/both" -type f -o -type l)"
echo "libsds installs and links through pkg-config, shared and static"
