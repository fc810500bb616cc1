#!/bin/sh
# Programs some tests use, installed when this machine allows it (Debian, as root, with
# network). Each test that needs one skips with a reason where it is missing, so a failure
# here never fails `make test`.
missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v spamassassin >/dev/null 2>&1 || missing="$missing spamassassin"
command -v smtp-sink >/dev/null 2>&1 || [ -x /usr/sbin/smtp-sink ] || missing="$missing postfix"
[ -x /usr/sbin/dovecot ] || missing="$missing dovecot-imapd"
if [ -n "$missing" ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing test tools:$missing"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing >/dev/null 2>&1 ||
      { apt-get update -q >/dev/null 2>&1 &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing >/dev/null 2>&1; } ||
      echo "could not install$missing; the tests that need them will be skipped"
  else
    echo "not installing$missing (needs root and apt-get); the tests that need them will be skipped"
  fi
fi

# The reference MJML validator (npm mjml 4), into tests/.cache, for the strict-validation test.
cache="$(dirname "$0")/.cache/mjml"
if [ ! -x "$cache/node_modules/.bin/mjml" ]; then
  if command -v npm >/dev/null 2>&1; then
    echo "installing the reference MJML validator (npm mjml@4) into tests/.cache/mjml"
    mkdir -p "$cache" &&
      npm install --silent --no-audit --no-fund --prefix "$cache" mjml@4 >/dev/null 2>&1 ||
      echo "could not install npm mjml; the validator test will be skipped"
  else
    echo "npm is missing; the MJML validator test will be skipped"
  fi
fi
exit 0
