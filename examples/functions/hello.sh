#!/bin/sh
# A fork-per-request function: the request body arrives on stdin, stdout is the response.
name="$(cat)"
[ -n "$name" ] || name="world"
echo "Hello, ${name}! (${Http_Method:-GET} ${Http_Path:-/}, greeting from ${greeting:-tributary})"
