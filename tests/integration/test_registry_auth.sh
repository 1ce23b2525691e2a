#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Registry authentication against the real distribution registry: HTTP Basic (an htpasswd
# registry; credentials from --dest-creds/--src-creds and from a Docker config file) and Bearer
# tokens (the registry's token mode with tools/tokenserver.py). Wrong or missing credentials
# must give exit status 1 and an error that says authentication failed at which registry, and
# never shows the password.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

sw_tmpdir
rootfs_tar "$T/rootfs.tar"
run_ok import "$SLIPWAY" image import "$T/rootfs.tar" "oci:$T/src:base"
D=$(layout_digest "$T/src" base)
[ -n "$D" ] || fail "import left no 'base' tag in $T/src/index.json"

USER=alice
PASS='S3cret-basic-pw'
BADPASS='Wr0ng-basic-pw'

# An error for a refused request: status 1, names the registry, speaks of authentication, and
# never shows a password.
check_auth_error() {
	local what=$1 registry=$2
	assert_eq 1 "$RC" "exit status of $what"
	assert_contains "$ERR" "$registry" "error of $what"
	[[ ${ERR,,} =~ authenticat|unauthori|denied|credential ]] ||
		fail "error of $what does not say authentication failed: $ERR"
	assert_not_contains "$ERR" "$PASS" "error of $what"
	assert_not_contains "$ERR" "$BADPASS" "error of $what"
	assert_not_contains "$ERR" "$TOKPASS" "error of $what"
	assert_not_contains "$ERR" "$TOKBAD" "error of $what"
	assert_not_contains "$ERR" "$(printf '%s:%s' "$USER" "$PASS" | base64)" "error of $what"
}
TOKPASS='T0ken-user-pw'
TOKBAD='T0ken-wrong-pw'

# ---------------------------------------------------------------- Basic (htpasswd)

note "htpasswd registry: push with --dest-creds"
start_registry htpasswd "$USER" "$PASS"
REG=$REGISTRY
run_ok push "$SLIPWAY" image copy --dest-creds "$USER:$PASS" "oci:$T/src:base" \
	"docker://$REG/auth/basic:1"
assert_eq "$D" "$OUT" "digest printed by the push with --dest-creds"
assert_eq "$D" "$(registry_manifest_digest "$REG" auth/basic 1 -u "$USER:$PASS")" \
	"digest in the htpasswd registry"
assert_eq "$D" "$(skopeo inspect --tls-verify=false --creds "$USER:$PASS" \
	"docker://$REG/auth/basic:1" | json_get "d['Digest']")" "digest seen by skopeo"

note "htpasswd registry: pull with --src-creds"
run_ok pull "$SLIPWAY" image copy --src-creds "$USER:$PASS" "docker://$REG/auth/basic:1" \
	"oci:$T/pulled:p"
assert_eq "$D" "$(layout_digest "$T/pulled" p)" "digest pulled with --src-creds"
layout_verify "$T/pulled"

note "htpasswd registry: wrong password"
run push-bad "$SLIPWAY" image copy --dest-creds "$USER:$BADPASS" "oci:$T/src:base" \
	"docker://$REG/auth/basic:bad"
check_auth_error "a push with a wrong password" "$REG"
assert_eq 404 "$(registry_manifest_code "$REG" auth/basic bad -u "$USER:$PASS")" \
	"tag pushed with a wrong password"
run pull-bad "$SLIPWAY" image copy --src-creds "$USER:$BADPASS" "docker://$REG/auth/basic:1" \
	"oci:$T/pulled-bad:p"
check_auth_error "a pull with a wrong password" "$REG"
[ -z "$(layout_digest "$T/pulled-bad" p)" ] || fail "a pull with a wrong password tagged p"

note "htpasswd registry: no credentials at all"
run push-anon "$SLIPWAY" image copy "oci:$T/src:base" "docker://$REG/auth/basic:anon"
check_auth_error "a push without credentials" "$REG"

note "htpasswd registry: credentials from a Docker config file (auth)"
mkdir -p "$T/dockercfg"
AUTH=$(printf '%s:%s' "$USER" "$PASS" | base64 -w0)
printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$REG" "$AUTH" >"$T/dockercfg/config.json"
DOCKER_CONFIG="$T/dockercfg" run_ok push-cfg "$SLIPWAY" image copy "oci:$T/src:base" \
	"docker://$REG/auth/cfg:1"
assert_eq "$D" "$OUT" "digest printed by the push with a Docker config"
assert_eq "$D" "$(registry_manifest_digest "$REG" auth/cfg 1 -u "$USER:$PASS")" \
	"digest pushed with a Docker config"
DOCKER_CONFIG="$T/dockercfg" run_ok pull-cfg "$SLIPWAY" image copy "docker://$REG/auth/cfg:1" \
	"oci:$T/pulled-cfg:p"
assert_eq "$D" "$(layout_digest "$T/pulled-cfg" p)" "digest pulled with a Docker config"

note "htpasswd registry: credentials from a Docker config file (username/password)"
mkdir -p "$T/dockercfg2"
printf '{"auths":{"%s":{"username":"%s","password":"%s"}}}\n' "$REG" "$USER" "$PASS" \
	>"$T/dockercfg2/config.json"
DOCKER_CONFIG="$T/dockercfg2" run_ok push-cfg2 "$SLIPWAY" image copy "oci:$T/src:base" \
	"docker://$REG/auth/cfg2:1"
assert_eq "$D" "$(registry_manifest_digest "$REG" auth/cfg2 1 -u "$USER:$PASS")" \
	"digest pushed with username/password from a Docker config"

note "htpasswd registry: a wrong password in the Docker config file"
mkdir -p "$T/dockercfg-bad"
printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$REG" "$(printf '%s:%s' "$USER" "$BADPASS" |
	base64 -w0)" >"$T/dockercfg-bad/config.json"
DOCKER_CONFIG="$T/dockercfg-bad" run push-cfg-bad "$SLIPWAY" image copy "oci:$T/src:base" \
	"docker://$REG/auth/cfg:bad"
check_auth_error "a push with a wrong password from the Docker config" "$REG"

# ---------------------------------------------------------------- Bearer tokens

note "token registry: push with credentials"
start_registry token bob "$TOKPASS"
TREG=$REGISTRY
run_ok tpush "$SLIPWAY" image copy --dest-creds "bob:$TOKPASS" "oci:$T/src:base" \
	"docker://$TREG/auth/token:1"
assert_eq "$D" "$OUT" "digest printed by the push to the token registry"
tokenserver_stats >"$T/tok1.json"
[ "$(json_get "d['authenticated']" "$T/tok1.json")" -ge 1 ] ||
	fail "the token server issued no token to bob: $(cat "$T/tok1.json")"
json_get "any(s['name'] == 'auth/token' and 'push' in s['actions'] for s in d['scopes'])" \
	"$T/tok1.json" | grep -qx true || fail "no push scope was asked for: $(cat "$T/tok1.json")"
# Tokens are cached: one push of a config and a layer needs a couple at most, not one each.
ISSUED=$(json_get "d['issued']" "$T/tok1.json")
[ "$ISSUED" -le 3 ] || fail "$ISSUED tokens for one push: they are not cached"
assert_eq "$D" "$(skopeo inspect --tls-verify=false --creds "bob:$TOKPASS" \
	"docker://$TREG/auth/token:1" | json_get "d['Digest']")" "digest seen by skopeo (token)"

note "token registry: pull with credentials"
run_ok tpull "$SLIPWAY" image copy --src-creds "bob:$TOKPASS" "docker://$TREG/auth/token:1" \
	"oci:$T/tpulled:p"
assert_eq "$D" "$OUT" "digest printed by the pull from the token registry"
assert_eq "$D" "$(layout_digest "$T/tpulled" p)" "digest pulled from the token registry"
layout_verify "$T/tpulled"

note "token registry: anonymous push is refused"
run tpush-anon "$SLIPWAY" image copy "oci:$T/src:base" "docker://$TREG/auth/token:anon"
check_auth_error "an anonymous push to the token registry" "$TREG"
[ "$(tokenserver_stats | json_get "d['anonymous']")" -ge 1 ] ||
	fail "the anonymous push never asked the token server"

note "token registry: wrong credentials"
run tpush-bad "$SLIPWAY" image copy --dest-creds "bob:$TOKBAD" "oci:$T/src:base" \
	"docker://$TREG/auth/token:bad"
check_auth_error "a push with wrong token-server credentials" "$TREG"
[ "$(tokenserver_stats | json_get "d['denied']")" -ge 1 ] ||
	fail "the token server denied nothing"
run tpull-bad "$SLIPWAY" image copy --src-creds "bob:$TOKBAD" "docker://$TREG/auth/token:1" \
	"oci:$T/tpulled-bad:p"
check_auth_error "a pull with wrong token-server credentials" "$TREG"
[ -z "$(layout_digest "$T/tpulled-bad" p)" ] || fail "a pull with wrong credentials tagged p"

note "token registry: credentials from a Docker config file"
mkdir -p "$T/dockercfg-tok"
printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$TREG" "$(printf 'bob:%s' "$TOKPASS" | base64 -w0)" \
	>"$T/dockercfg-tok/config.json"
DOCKER_CONFIG="$T/dockercfg-tok" run_ok tpush-cfg "$SLIPWAY" image copy "oci:$T/src:base" \
	"docker://$TREG/auth/token-cfg:1"
assert_eq "$D" "$OUT" "digest printed by the token push with a Docker config"

note "all passed"
