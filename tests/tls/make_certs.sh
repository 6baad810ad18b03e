#!/usr/bin/env bash
# make_certs.sh DIR: writes the TLS test certificates into DIR with the
# openssl command. EC P-256 keys keep generation to a fraction of a second,
# so every test process can make its own fresh set.
#
#   ca.pem ca.key                  root CA ("anyloop test CA")
#   intermediate.pem .key          intermediate CA signed by ca
#   server.pem server.key          leaf for localhost, 127.0.0.1, ::1; signed by ca
#   chained-full.pem               key + leaf (localhost, signed by intermediate) + intermediate, one file
#   client.pem client.key          client leaf (CN "anyloop test client"); signed by ca
#   other-ca.pem other-ca.key      an unrelated CA
#   other-client.pem .key          client leaf signed by the unrelated CA
#   expired.pem expired.key        leaf for localhost signed by ca, expired in 2020
#   self-signed.pem .key           self-signed leaf for localhost
#   encrypted.key                  server.key encrypted with the password "secret"
#   ca-dir/                        ca.pem under its subject hash (for a CA directory)
#   garbage.pem                    not PEM at all
set -euo pipefail
dir=${1:?usage: make_certs.sh DIR}
mkdir -p "$dir"
cd "$dir"

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

cat > ext.cnf <<'CNF'
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1
[client_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
CNF

# ca NAME SUBJECT: a self-signed CA.
ca() {
    key "$1.key"
    openssl req -new -x509 -key "$1.key" -out "$1.pem" -days 3650 -subj "$2" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
}

# leaf NAME SUBJECT ISSUER EXTENSION: a key and a certificate signed by ISSUER.
leaf() {
    key "$1.key"
    openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
    openssl x509 -req -in "$1.csr" -CA "$3.pem" -CAkey "$3.key" -CAcreateserial -days 825 \
        -extfile ext.cnf -extensions "$4" -out "$1.pem" 2>/dev/null
    rm -f "$1.csr"
}

ca ca "/CN=anyloop test CA"
ca other-ca "/CN=anyloop unrelated CA"

leaf intermediate "/CN=anyloop test intermediate" ca ca_ext
leaf server "/CN=localhost" ca server_ext
leaf chained "/CN=localhost" intermediate server_ext
cat chained.key chained.pem intermediate.pem > chained-full.pem
leaf client "/CN=anyloop test client" ca client_ext
leaf other-client "/CN=anyloop unrelated client" other-ca client_ext

# Self-signed leaf: it is its own issuer.
key self-signed.key
openssl req -new -x509 -key self-signed.key -out self-signed.pem -days 825 -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost" 2>/dev/null

# Expired leaf: openssl x509 cannot back-date, `openssl ca` can.
mkdir -p ca-db
: > ca-db/index.txt
echo 01 > ca-db/serial
cat > ca-db/ca.cnf <<CNF
[ca]
default_ca = test_ca
[test_ca]
database = $dir/ca-db/index.txt
serial = $dir/ca-db/serial
new_certs_dir = $dir/ca-db
certificate = $dir/ca.pem
private_key = $dir/ca.key
default_md = sha256
policy = any
copy_extensions = none
unique_subject = no
[any]
commonName = supplied
CNF
key expired.key
openssl req -new -key expired.key -subj "/CN=localhost" -out expired.csr
openssl ca -batch -config ca-db/ca.cnf -in expired.csr -out expired.pem -notext \
    -startdate 20200101000000Z -enddate 20200201000000Z -extfile ext.cnf -extensions server_ext 2>/dev/null
rm -f expired.csr

openssl pkey -in server.key -aes256 -passout pass:secret -out encrypted.key

mkdir -p ca-dir
cp ca.pem ca-dir/
openssl rehash ca-dir 2>/dev/null || ln -sf ca.pem "ca-dir/$(openssl x509 -hash -noout -in ca.pem).0"

printf 'this is not a PEM file\n' > garbage.pem
