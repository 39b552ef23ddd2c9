#!/bin/bash
# Counts over IR, passes, runtime/artifact/evaluate, CLI, backends, sims (not training/exporter).
cd "${1:-.}"
FILES=$(find snncc/ir snncc/passes snncc/runtime.py snncc/artifact.py snncc/evaluate.py snncc/cli backends sims -name '*.py' 2>/dev/null)
OPS='Input|Dense|Conv|Pool|Flatten|Neuron|Add|Readout|OP_TYPES'
echo -n "isinstance checks on IR op classes: "; grep -Eo "isinstance\([^,]*(\([^)]*\))?[^,]*,\s*\(?[A-Za-z_, ]*\b($OPS)\b" $FILES | wc -l
echo -n "string comparisons on mode/kind/role/encoding/precision/var/target/backend/sign_mode: "
grep -Eo "(mode|kind|role|encoding|precision|var|target|backend|sign_mode)\)?\s*(==|!=|not in|in)\s*[(\"']" $FILES | wc -l
