#!/bin/sh
# am2z over TLS through the transport hook (examples/tls/redis_tls.c, OpenSSL): a CA, a
# server and a client certificate made here with the openssl command, a redis-server with
# --tls-port and --tls-auth-clients yes on a free loopback port, then:
#   1. the example connects (PING) and runs a queue round trip over TLS;
#   2. a server certificate from another CA is refused (verification failure);
#   3. a server name that the certificate does not carry is refused;
#   4. without a client certificate the server refuses the client.
# Needs redis-server (built with TLS, as Debian's is), openssl and libssl-dev; a missing
# one is a skip, or a failure under CI=true. Ends with "N passed, N failed".
set -u
cd "$(dirname "$0")/.." || exit 2
B=build/t/tls
rm -rf "$B"; mkdir -p "$B"
P=0 F=0 REDIS_PID=""
trap '[ -n "$REDIS_PID" ] && kill -9 "$REDIS_PID" 2>/dev/null' EXIT
ok()  { P=$((P + 1)); echo "ok   $1"; }
bad() { F=$((F + 1)); echo "FAIL $1" >&2; }
skip() {
    echo "SKIP test_tls: $1" >&2
    if [ "${CI:-}" = "true" ]; then echo "0 passed, 1 failed"; exit 1; fi
    echo "0 passed, 0 failed, 1 skipped"; exit 0
}
command -v redis-server >/dev/null 2>&1 || skip "redis-server not installed"
command -v openssl >/dev/null 2>&1 || skip "openssl not installed"
cc -std=c99 -Wall -Wextra -Wpedantic -Werror -O2 -I. -o "$B/redis_tls" examples/tls/redis_tls.c \
    -pthread -lm -lssl -lcrypto 2>"$B/build.log" || { cat "$B/build.log" >&2; skip "cannot build with OpenSSL (libssl-dev)"; }

# CA, server certificate for 127.0.0.1/localhost, client certificate, and a stranger CA
cert() { # name, CA name, subjectAltName
    openssl req -newkey rsa:2048 -nodes -keyout "$B/$1.key" -subj "/CN=$1" -out "$B/$1.csr" 2>/dev/null &&
    printf 'subjectAltName=%s\n' "$3" >"$B/$1.ext" &&
    openssl x509 -req -in "$B/$1.csr" -CA "$B/$2.crt" -CAkey "$B/$2.key" -CAcreateserial -days 2 \
        -extfile "$B/$1.ext" -out "$B/$1.crt" 2>/dev/null
}
ca() { openssl req -x509 -newkey rsa:2048 -nodes -keyout "$B/$1.key" -subj "/CN=$1" -days 2 -out "$B/$1.crt" 2>/dev/null; }
ca ca && ca stranger && cert server ca "IP:127.0.0.1,DNS:localhost" && cert client ca "DNS:client" &&
    cert imposter stranger "IP:127.0.0.1" || { bad "certificates made"; echo "$P passed, $F failed"; exit 1; }

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
       echo $((21000 + $$ % 20000)))
start() { # cert key
    [ -n "$REDIS_PID" ] && { kill -9 "$REDIS_PID" 2>/dev/null; wait "$REDIS_PID" 2>/dev/null; }
    redis-server --port 0 --bind 127.0.0.1 --tls-port "$PORT" --tls-cert-file "$B/$1.crt" --tls-key-file "$B/$1.key" \
        --tls-ca-cert-file "$B/ca.crt" --tls-auth-clients yes --save '' --appendonly no >>"$B/redis.log" 2>&1 &
    REDIS_PID=$!
    i=0
    until grep -q "Ready to accept connections" "$B/redis.log" 2>/dev/null && [ "$(grep -c 'Ready to accept' "$B/redis.log")" -ge "$2" ]; do
        i=$((i + 1)); [ $i -gt 100 ] && return 1; sleep 0.05
    done
}
run() { # log, env...
    log=$1; shift
    env REDIS_HOST=127.0.0.1 REDIS_PORT="$PORT" "$@" "$B/redis_tls" >"$B/$log.out" 2>"$B/$log.err"
}
start server 1 || { bad "redis-server with TLS started (see $B/redis.log)"; echo "$P passed, $F failed"; exit 1; }

if run good AM2Z_TLS_CA="$B/ca.crt" AM2Z_TLS_CERT="$B/client.crt" AM2Z_TLS_KEY="$B/client.key" &&
   grep -q '^PING over TLS: PONG' "$B/good.out" && grep -q '^tls ok: hello over TLS, am2z' "$B/good.out"; then
    ok "PING and a queue round trip over TLS ($(sed -n 's/^tls ok: .*(\(.*\))$/\1/p' "$B/good.out"))"
else bad "TLS round trip"; cat "$B/good.out" "$B/good.err" >&2; fi

if ! run strangerca AM2Z_TLS_CA="$B/stranger.crt" AM2Z_TLS_CERT="$B/client.crt" AM2Z_TLS_KEY="$B/client.key" &&
   grep -q 'certificate verify failed\|unable to get local issuer' "$B/strangerca.err"; then
    ok "a server certificate from another CA is refused"
else bad "server verification"; cat "$B/strangerca.err" >&2; fi

if ! run wrongname AM2Z_TLS_CA="$B/ca.crt" AM2Z_TLS_SNI=redis.example AM2Z_TLS_CERT="$B/client.crt" \
        AM2Z_TLS_KEY="$B/client.key" && grep -q 'hostname mismatch' "$B/wrongname.err"; then
    ok "a server name the certificate does not carry is refused"
else bad "hostname verification"; cat "$B/wrongname.err" >&2; fi

if ! run noclient AM2Z_TLS_CA="$B/ca.crt" && grep -q 'connection failed\|handshake' "$B/noclient.err"; then
    ok "without a client certificate the server refuses the client"
else bad "client certificate required"; cat "$B/noclient.out" "$B/noclient.err" >&2; fi

echo "$P passed, $F failed"
[ "$F" -eq 0 ]
