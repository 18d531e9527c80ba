#!/usr/bin/env bash
# Generates the certificate layout ringress's walkthrough and `ringress demo` use, with
# the openssl command line, for people who follow the walkthrough by hand:
#
#   DIR/root-ca.crt, root-ca.key                  self-signed root CA (10 years)
#   DIR/intermediate-ca.crt, intermediate-ca.key  CA signed by the root, pathlen 0 (10 years)
#   DIR/ca-chain.pem                              intermediate then root (curl --cacert, caCertificates)
#   DIR/<host>.crt, <host>.key                    server leaf (SAN = host) then the intermediate (1 year)
#   DIR/client.crt, client.key                    client leaf client.example.com then the intermediate
#   DIR/other-ca.crt, other-ca.key                an unrelated root CA (for "wrong CA" tests)
#   DIR/other-client.crt, other-client.key        client leaf signed by the other CA
#
# A wildcard host '*.example.com' is written as _wildcard.example.com.crt/.key. Keys are
# ECDSA P-256, PKCS#8 PEM, mode 0600. Files are built in a temporary directory and then
# moved into DIR, so running the script again over DIR (a rotation) replaces them whole.
# `ringress demo` writes the same layout with rcgen (src/demo/pki.rs).
set -euo pipefail

prog=$(basename "$0")

usage() {
    cat >&2 <<USAGE
usage: $prog DIR HOST [HOST...]

Writes a root CA, an intermediate CA, one server certificate per HOST, a client
certificate (client.example.com) and an unrelated CA into DIR (created if missing).
HOST is a DNS name, '*.'-prefixed wildcard, or an IP address.

example:
  $prog ./certs httpbin.example.com bookinfo.com
  curl --resolve httpbin.example.com:443:127.0.0.1 --cacert ./certs/ca-chain.pem \\
       https://httpbin.example.com/status/418
USAGE
    exit 2
}

die() {
    echo "$prog: $*" >&2
    exit 1
}

case "${1:-}" in
    -h | --help) usage ;;
esac
[[ $# -ge 2 ]] || usage
command -v openssl >/dev/null || die "openssl is not on PATH; install it (e.g. apt-get install openssl)"

dir=$1
shift

# The file stem of a host: lower-case, '*.' replaced by '_wildcard.'.
stem() {
    local host=${1,,}
    if [[ $host == '*.'* ]]; then
        printf '_wildcard.%s' "${host#\*.}"
    else
        printf '%s' "$host"
    fi
}

# The subjectAltName value of a host: IP:... for addresses, DNS:... otherwise.
san() {
    if [[ $1 =~ ^[0-9]+(\.[0-9]+){3}$ || $1 == *:* ]]; then
        printf 'IP:%s' "$1"
    else
        printf 'DNS:%s' "${1,,}"
    fi
}

for host in "$@"; do
    if ! [[ $host =~ ^(\*\.)?[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$ || $host =~ ^[0-9A-Fa-f:.]+$ ]]; then
        die "host '$host' is not a DNS name, '*.'-wildcard or IP address"
    fi
    case "$(stem "$host")" in
        root-ca | intermediate-ca | ca-chain | client | other-ca | other-client)
            die "host '$host' would overwrite one of the CA or client files"
            ;;
    esac
done

mkdir -p "$dir"
work=$(mktemp -d "$dir/.gen-certs.XXXXXX")
trap 'rm -rf "$work"' EXIT

cat >"$work/openssl.cnf" <<'CNF'
[req]
distinguished_name = req_dn
[req_dn]

[root]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash

[intermediate]
basicConstraints = critical, CA:true, pathlen:0
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[server]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
subjectAltName = $ENV::SAN

[client]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
subjectAltName = $ENV::SAN
CNF
export SAN=unused
cnf=$work/openssl.cnf

# newkey NAME: an ECDSA P-256 key in PKCS#8 PEM, mode 0600.
newkey() {
    (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/$1.key")
}

# selfsign NAME CN: a self-signed root CA.
selfsign() {
    newkey "$1"
    openssl req -x509 -new -config "$cnf" -extensions root -key "$work/$1.key" -sha256 \
        -days 3650 -subj "/O=ringress demo/CN=$2" -out "$work/$1.crt" 2>/dev/null
}

# sign NAME CN EXTENSIONS DAYS CA: a key and a certificate for it signed by CA.
sign() {
    newkey "$1"
    openssl req -new -config "$cnf" -key "$work/$1.key" -subj "/O=ringress demo/CN=$2" \
        -out "$work/$1.csr" 2>/dev/null
    openssl x509 -req -in "$work/$1.csr" -CA "$work/$5.crt" -CAkey "$work/$5.key" \
        -set_serial "0x$(openssl rand -hex 16)" -days "$4" -sha256 \
        -extfile "$cnf" -extensions "$3" -out "$work/$1.leaf" 2>/dev/null
    rm -f "$work/$1.csr"
}

selfsign root-ca "ringress demo root CA"
sign intermediate-ca "ringress demo intermediate CA" intermediate 3650 root-ca
mv "$work/intermediate-ca.leaf" "$work/intermediate-ca.crt"
cat "$work/intermediate-ca.crt" "$work/root-ca.crt" >"$work/ca-chain.pem"
selfsign other-ca "ringress demo other CA"

for host in "$@"; do
    name=$(stem "$host")
    SAN=$(san "$host") sign "$name" "${host,,}" server 365 intermediate-ca
    cat "$work/$name.leaf" "$work/intermediate-ca.crt" >"$work/$name.crt"
    rm -f "$work/$name.leaf"
done

SAN=DNS:client.example.com sign client client.example.com client 365 intermediate-ca
cat "$work/client.leaf" "$work/intermediate-ca.crt" >"$work/client.crt"
SAN=DNS:client.example.com sign other-client client.example.com client 365 other-ca
mv "$work/other-client.leaf" "$work/other-client.crt"
rm -f "$work"/*.leaf "$cnf"

chmod 600 "$work"/*.key
chmod 644 "$work"/*.crt "$work"/*.pem
mv -f "$work"/*.key "$work"/*.crt "$work"/*.pem "$dir"/

echo "$prog: wrote root, intermediate, ca-chain.pem, client and other-CA files and $# server certificate(s) to $dir"
