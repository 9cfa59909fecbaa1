#!/bin/sh
# make_certs.sh DIR -- TLS material for the emulated cloud (tests only).
#
#   DIR/ca.pem, DIR/ca.key          test CA (30 days)
#   DIR/server.pem, DIR/server.key  server cert signed by the CA,
#                                   SAN IP:127.0.0.1 + DNS:localhost, 2 days
#   DIR/wrong-ca.pem                a second, unrelated CA
#   DIR/wrong.pem, DIR/wrong.key    server cert (same SANs) signed by wrong-ca
#
# EC P-256 keys. Quiet on success. Idempotent: when every file exists and
# every certificate is valid for at least another hour, nothing is done.
# Files are generated in a temporary directory and renamed into place.
set -eu

if [ $# -ne 1 ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
dir=$1
mkdir -p "$dir"

valid() {
    [ -s "$1" ] && openssl x509 -in "$1" -noout -checkend 3600 >/dev/null 2>&1
}

if valid "$dir/ca.pem" && [ -s "$dir/ca.key" ] &&
    valid "$dir/server.pem" && [ -s "$dir/server.key" ] &&
    valid "$dir/wrong-ca.pem" && valid "$dir/wrong.pem" && [ -s "$dir/wrong.key" ]; then
    exit 0
fi

umask 077
tmp=$(mktemp -d "$dir/.make_certs.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

# Run a command quietly; show its output only when it fails.
run() {
    if ! "$@" >"$tmp/log" 2>&1; then
        echo "make_certs.sh: failed: $*" >&2
        cat "$tmp/log" >&2
        exit 1
    fi
}

cat >"$tmp/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no

[dn]
CN = placeholder

[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
EOF

newkey() {
    run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"
}

# make_ca NAME COMMON_NAME
make_ca() {
    newkey "$tmp/$1.key"
    run openssl req -new -x509 -config "$tmp/openssl.cnf" -extensions ca_ext \
        -key "$tmp/$1.key" -subj "/CN=$2" -days 30 -out "$tmp/$1.pem"
}

# make_server NAME CA_NAME
make_server() {
    newkey "$tmp/$1.key"
    run openssl req -new -config "$tmp/openssl.cnf" -key "$tmp/$1.key" \
        -subj "/CN=localhost" -out "$tmp/$1.csr"
    run openssl x509 -req -in "$tmp/$1.csr" -CA "$tmp/$2.pem" -CAkey "$tmp/$2.key" \
        -set_serial "0x$(openssl rand -hex 15)" -days 2 \
        -extfile "$tmp/openssl.cnf" -extensions server_ext -out "$tmp/$1.pem"
}

make_ca ca "smarthomefs test CA"
make_server server ca
make_ca wrong-ca "smarthomefs WRONG test CA"
make_server wrong wrong-ca

chmod 600 "$tmp"/*.key
chmod 644 "$tmp"/*.pem
for f in ca.key ca.pem server.key server.pem wrong-ca.pem wrong.key wrong.pem; do
    mv -f "$tmp/$f" "$dir/$f"
done
