#!/bin/sh
echo "$GREETING from slipway $(cat "$APP_HOME/VERSION") as $(id -un)"
