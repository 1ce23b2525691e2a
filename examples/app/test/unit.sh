#!/bin/sh
# The example's unit tests: each case runs `greet` and compares its output; the results are
# written as JUnit XML to build/junit.xml (slipway merges it into the pipeline report).
set -u
mkdir -p build
pass=0 fail=0 cases=""
check() { # NAME EXPECTED CMD...
	name=$1 expected=$2
	shift 2
	got=$("$@" 2>&1)
	if [ "$got" = "$expected" ]; then
		pass=$((pass + 1))
		cases="$cases<testcase classname=\"greet\" name=\"$name\"/>"
		echo "ok   $name"
	else
		fail=$((fail + 1))
		cases="$cases<testcase classname=\"greet\" name=\"$name\"><failure message=\"got: $got\"/></testcase>"
		echo "FAIL $name: got '$got', expected '$expected'"
	fi
}
check "greets a name" "hello, ada, from slipway" greet ada
check "greets a name with spaces" "hello, grace hopper, from slipway" greet "grace hopper"
check "refuses no name" "usage: greet NAME" greet
check "the built page greets the world" "hello, world, from slipway" cat /srv/app/www/index.html
printf '<?xml version="1.0" encoding="UTF-8"?>\n<testsuite name="unit" tests="%d" failures="%d">%s</testsuite>\n' \
	$((pass + fail)) "$fail" "$cases" > build/junit.xml
[ "$fail" -eq 0 ]
