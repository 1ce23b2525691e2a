#!/bin/sh
# greet NAME: the example app's whole business logic.
name=${1:-}
if [ -z "$name" ]; then
	echo "usage: greet NAME" >&2
	exit 2
fi
echo "hello, $name, from slipway"
