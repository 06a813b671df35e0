package dataapitest

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
)

var updateOps = []string{"$set", "$unset", "$inc", "$mul", "$min", "$max", "$rename", "$push", "$addToSet", "$pop", "$currentDate", "$setOnInsert"}

// validateUpdate checks an update clause: known operators, object arguments, and no
// operator on _id (data-api.md §3.4).
func validateUpdate(u map[string]any) *apiError {
	for op, arg := range u {
		if op == "$pullAll" {
			return errUpdateOp("Unsupported update operator '$pullAll'")
		}
		if !slices.Contains(updateOps, op) {
			return errUpdateOp("Unrecognized update operator '" + op + "'")
		}
		m, ok := arg.(map[string]any)
		if !ok {
			return errUpdateParam("update operator '" + op + "' requires an Object argument, got " + jsonType(arg))
		}
		for path, v := range m {
			if path == "_id" || strings.HasPrefix(path, "_id.") {
				return errUpdateDocID(op)
			}
			if path == "" || strings.HasPrefix(path, "$") && path != "$vector" && path != "$vectorize" && path != "$lexical" {
				return errUpdateParam("update operator '" + op + "' has invalid path '" + path + "'")
			}
			switch op {
			case "$inc", "$mul":
				if _, ok := v.(json.Number); !ok {
					return errUpdateParam(op + " requires numeric parameter, got: " + jsonType(v))
				}
			case "$currentDate":
				okv := v == true
				if m2, ok := v.(map[string]any); ok && len(m2) == 1 && m2["$type"] == "date" {
					okv = true
				}
				if !okv {
					return errUpdateParam("$currentDate requires argument of either `true` or `{\"$type\":\"date\"}`, got: " + jsonText(v))
				}
			case "$pop":
				n, ok := v.(json.Number)
				if !ok || (cmpNum(n, "1") != 0 && cmpNum(n, "-1") != 0) {
					return errUpdateParam("$pop requires NUMBER argument (-1 or 1), instead got: " + jsonText(v))
				}
			case "$rename":
				if s, ok := v.(string); !ok || s == "" || s == "_id" {
					return errUpdateParam("$rename requires STRING parameter (non-empty, not '_id') for '" + path + "'")
				}
			case "$push", "$addToSet":
				if em, ok := v.(map[string]any); ok {
					if _, each := em["$each"]; each {
						if _, ok := em["$each"].([]any); !ok {
							return errUpdateParam(op + " modifier $each requires ARRAY argument")
						}
						for mk := range em {
							if mk != "$each" && !(op == "$push" && mk == "$position") {
								return errUpdateParam(op + " does not support modifier '" + mk + "'")
							}
						}
					}
				}
			}
		}
	}
	return nil
}

// applyUpdate applies update u to doc in place; insert says whether this builds an upserted
// document (so $setOnInsert applies). Operators run in a fixed order for determinism.
func applyUpdate(doc map[string]any, u map[string]any, insert bool) *apiError {
	for _, op := range updateOps {
		arg, ok := u[op].(map[string]any)
		if !ok {
			continue
		}
		for _, p := range slices.Sorted(maps.Keys(arg)) {
			if err := applyOp(doc, op, p, arg[p], insert); err != nil {
				return err
			}
		}
	}
	return nil
}

// applyOp applies one (validated) update operator with argument v to the path p of doc.
func applyOp(doc map[string]any, op, p string, v any, insert bool) *apiError {
	segs := splitPath(p)
	cur, exists := getPath(doc, segs)
	switch op {
	case "$set":
		if !setPath(doc, segs, deepCopy(v)) {
			return errUpdateTarget("$set cannot set path '" + p + "'")
		}
	case "$setOnInsert":
		if insert && !setPath(doc, segs, deepCopy(v)) {
			return errUpdateTarget("$setOnInsert cannot set path '" + p + "'")
		}
	case "$unset":
		unsetPath(doc, segs)
	case "$inc", "$mul":
		return applyArith(doc, op, p, v.(json.Number), cur, exists)
	case "$min", "$max":
		if !exists {
			setPath(doc, segs, deepCopy(v))
			return nil
		}
		c := sortCompare(v, cur)
		if (op == "$min" && c < 0) || (op == "$max" && c > 0) {
			setPath(doc, segs, deepCopy(v))
		}
	case "$rename":
		if exists {
			unsetPath(doc, segs)
			if !setPath(doc, splitPath(v.(string)), cur) {
				return errUpdateTarget("$rename cannot set path '" + v.(string) + "'")
			}
		}
	case "$currentDate":
		setPath(doc, segs, map[string]any{"$date": json.Number(itoa(nowMillis()))})
	case "$pop":
		return applyPop(doc, p, v.(json.Number), cur, exists)
	case "$push", "$addToSet":
		return applyPush(doc, op, p, v, cur, exists)
	}
	return nil
}

// applyArith applies $inc or $mul by n to the number cur at path p; a missing field
// becomes n ($inc) or 0 ($mul).
func applyArith(doc map[string]any, op, p string, n json.Number, cur any, exists bool) *apiError {
	segs := splitPath(p)
	if !exists {
		if op == "$mul" {
			n = "0"
		}
		if !setPath(doc, segs, n) {
			return errUpdateTarget(op + " cannot set path '" + p + "'")
		}
		return nil
	}
	cn, ok := cur.(json.Number)
	if !ok {
		return errUpdateTarget(op + " requires target to be Number; value at '" + p + "' of type " + jsonType(cur))
	}
	o := byte('+')
	if op == "$mul" {
		o = '*'
	}
	setPath(doc, segs, arith(cn, n, o))
	return nil
}

// applyPop removes the last (n is 1) or first element of the array cur at path p.
func applyPop(doc map[string]any, p string, n json.Number, cur any, exists bool) *apiError {
	if !exists {
		return nil
	}
	a, ok := cur.([]any)
	if !ok {
		return errUpdateTarget("$pop requires target to be Array; value at '" + p + "' of type " + jsonType(cur))
	}
	if len(a) > 0 {
		if cmpNum(n, "1") == 0 {
			a = a[:len(a)-1]
		} else {
			a = a[1:]
		}
	}
	setPath(doc, splitPath(p), slices.Clone(a))
	return nil
}

// applyPush appends v (or v's $each items, at $position) to the array cur at path p,
// creating it when missing; $addToSet skips items the array already holds.
func applyPush(doc map[string]any, op, p string, v, cur any, exists bool) *apiError {
	items := []any{v}
	pos := -1
	if em, ok := v.(map[string]any); ok {
		if each, ok := em["$each"].([]any); ok {
			items = each
			if pn, ok := em["$position"].(json.Number); ok {
				pos = int(parseNum(pn).i)
			}
		}
	}
	var a []any
	if exists {
		var ok bool
		if a, ok = cur.([]any); !ok {
			return errUpdateTarget(op + " requires target to be Array; value at '" + p + "' of type " + jsonType(cur))
		}
	}
	a = slices.Clone(a)
	for _, it := range items {
		if op == "$addToSet" && slices.ContainsFunc(a, func(e any) bool { return equal(e, it) }) {
			continue
		}
		it = deepCopy(it)
		if pos >= 0 && pos <= len(a) {
			a = slices.Insert(a, pos, it)
			pos++
		} else {
			a = append(a, it)
		}
	}
	if !setPath(doc, splitPath(p), a) {
		return errUpdateTarget(op + " cannot set path '" + p + "'")
	}
	return nil
}

func itoa(n int64) string { return string(numFrom(numVal{isInt: true, i: n})) }

// projection is a parsed projection clause (data-api.md §3.3).
type projection struct {
	all, none bool     // {"*":1} / {"*":0}
	include   bool     // inclusion (else exclusion)
	paths     []string // listed paths, without _id
	idOut     bool     // "_id": 0
	slices    map[string][2]int
	vector    bool // $vector explicitly included
}

func parseProjection(p map[string]any) (*projection, *apiError) {
	pr := &projection{}
	if len(p) == 0 {
		return pr, nil
	}
	if v, ok := p["*"]; ok {
		if len(p) != 1 {
			return nil, errProjection("wildcard ('*') only allowed as the only root-level path")
		}
		if truthy(v) {
			pr.all = true
		} else {
			pr.none = true
		}
		return pr, nil
	}
	mode := 0 // 1 include, -1 exclude
	for k, v := range p {
		if m, ok := v.(map[string]any); ok {
			s, ok := m["$slice"]
			if !ok || len(m) != 1 {
				return nil, errProjection("unrecognized/unsupported projection operator in '" + k + "' (only '$slice' supported)")
			}
			if pr.slices == nil {
				pr.slices = map[string][2]int{}
			}
			switch x := s.(type) {
			case json.Number:
				pr.slices[k] = [2]int{int(parseNum(x).i), -1}
			case []any:
				if len(x) != 2 {
					return nil, errProjection("'$slice' array argument must have 2 elements")
				}
				a, _ := x[0].(json.Number)
				b, _ := x[1].(json.Number)
				pr.slices[k] = [2]int{int(parseNum(a).i), int(parseNum(b).i)}
			default:
				return nil, errProjection("'$slice' argument must be a Number or Array")
			}
			continue
		}
		in := truthy(v)
		if k == "_id" {
			pr.idOut = !in
			continue
		}
		if k == "$vector" && in {
			pr.vector = true
		}
		m := -1
		if in {
			m = 1
		}
		if mode != 0 && mode != m {
			return nil, errProjection("cannot mix inclusions and exclusions")
		}
		mode = m
		pr.paths = append(pr.paths, k)
	}
	// {"_id": 1} alone includes only _id.
	pr.include = mode == 1 || (mode == 0 && len(pr.slices) == 0 && !pr.idOut)
	return pr, nil
}

func truthy(v any) bool {
	switch x := v.(type) {
	case bool:
		return x
	case json.Number:
		return cmpNum(x, "0") != 0
	}
	return false
}

// apply returns the projected copy of doc (doc is not modified).
func (pr *projection) apply(doc map[string]any) map[string]any {
	if pr == nil {
		pr = &projection{}
	}
	switch {
	case pr.all:
		return doc
	case pr.none:
		return map[string]any{}
	}
	var out map[string]any
	if pr.include {
		out = map[string]any{}
		for _, p := range pr.paths {
			if v, ok := getPath(doc, splitPath(p)); ok {
				setPath(out, splitPath(p), v)
			}
		}
		if id, ok := doc["_id"]; ok && !pr.idOut {
			out["_id"] = id
		}
	} else {
		out = make(map[string]any, len(doc))
		nested := false
		for _, p := range pr.paths {
			nested = nested || strings.Contains(p, ".")
		}
		if nested {
			out = deepCopy(doc).(map[string]any)
		} else {
			for k, v := range doc {
				out[k] = v
			}
		}
		for _, p := range pr.paths {
			unsetPath(out, splitPath(p))
		}
		if pr.idOut {
			delete(out, "_id")
		}
		if !pr.vector {
			delete(out, "$vector")
		}
		delete(out, "$vectorize")
	}
	if len(pr.slices) > 0 {
		out = deepCopy(out).(map[string]any) // stored documents are shared and immutable
	}
	for p, s := range pr.slices {
		v, ok := getPath(doc, splitPath(p))
		a, isArr := v.([]any)
		if !ok || !isArr {
			continue
		}
		setPath(out, splitPath(p), sliceOf(a, s))
	}
	return out
}

func sliceOf(a []any, s [2]int) []any {
	if s[1] < 0 { // a single number: first n, or last n when negative
		n := s[0]
		if n >= 0 {
			return a[:min(n, len(a))]
		}
		return a[max(len(a)+n, 0):]
	}
	start := s[0]
	if start < 0 {
		start = max(len(a)+start, 0)
	}
	start = min(start, len(a))
	return a[start:min(start+s[1], len(a))]
}
