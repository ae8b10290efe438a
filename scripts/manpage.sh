#!/bin/sh
# Writes a man page (roff) for PROGRAM to stdout, made from its --help and --version output, so
# the page never disagrees with the binary. Usage: scripts/manpage.sh PROGRAM NAME "summary"
set -eu
prog=$1
name=$2
summary=$3
version=$("$prog" --version | head -n 1)
upper=$(printf '%s' "$name" | tr '[:lower:]' '[:upper:]')
printf '.TH %s 1 "" "%s" "User Commands"\n' "$upper" "$version"
printf '.SH NAME\n%s \\- %s\n' "$name" "$summary"
printf '.SH DESCRIPTION\n.nf\n'
# Escape roff: backslashes, and lines starting with a control character (. or ').
"$prog" --help | sed -e "s|^Usage: [^ ]*/$name |Usage: $name |" -e 's/\\/\\e/g' -e 's/^\([.'"'"']\)/\\\&\1/'
printf '.fi\n.SH FILES\n.TP\n/usr/local/share/optillm/prompts\n'
printf 'the built-in prompts, as files: copy, edit, and pass the copy with \\-\\-prompts\\-dir\n'
printf '.SH SEE ALSO\nThe README.md of optillm\\-c.\n'
