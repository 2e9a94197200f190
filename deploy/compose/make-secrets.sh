#!/bin/sh
# Creates the secret files docker-compose.yml mounts (compose `secrets:`), with random
# values, in deploy/compose/secrets/ (or the folder given). A file that exists is kept:
# a password already in a database or volume must be changed there first (then delete the
# file and run this again, or edit both files that carry it).
#   postgres_password       the database's password (POSTGRES_PASSWORD_FILE)
#   database_url            SECANALYST_DATABASE__URL, with that password
#   redis_acl / redis_url   Redis' ACL file (default user + password) and the app's URL
#                           (redis_password: kept only so both can be made again)
#   api_key_pepper          SECANALYST_GATEWAY__API_KEY_PEPPER (HMAC key of API key hashes)
#   grafana_admin_password  Grafana's `admin` (GF_SECURITY_ADMIN_PASSWORD__FILE)
# The containers read the files as their own non-root users (bind mounts keep the host's
# modes): the files are 0644 inside a folder only its owner can enter (0700).
set -eu
dir=${1:-$(dirname "$0")/secrets}
mkdir -p "$dir"
chmod 700 "$dir"

random() {  # 32 random bytes as hex: URL-safe, no quoting needed anywhere
  od -An -tx1 -N32 /dev/urandom | tr -d ' \n'
}

write() {  # write NAME VALUE: only if NAME does not exist yet
  if [ -e "$dir/$1" ]; then
    echo "kept    $dir/$1"
  else
    (umask 022 && printf '%s' "$2" > "$dir/$1")  # no newline: some readers keep it
    echo "created $dir/$1"
  fi
}

read_or_new() {  # the value already in file NAME, else a new random one
  if [ -e "$dir/$1" ]; then head -n1 "$dir/$1"; else random; fi
}

pg=$(read_or_new postgres_password)
write postgres_password "$pg"
write database_url "postgresql://secanalyst:$pg@postgres:5432/secanalyst"

redis=$(read_or_new redis_password)
write redis_password "$redis"
write redis_acl "user default on >$redis ~* &* +@all"
write redis_url "redis://:$redis@redis:6379/0"

write api_key_pepper "$(random)"
write grafana_admin_password "$(random)"
