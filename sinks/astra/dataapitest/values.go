package dataapitest

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"time"
)

func nowMillis() int64 { return time.Now().UnixMilli() }

// ejsonKind reports whether m is an EJSON wrapper value ({"$date": …}, {"$uuid": …},
// {"$objectId": …}, {"$binary": …}) and which.
func ejsonKind(m map[string]any) (string, bool) {
	if len(m) != 1 {
		return "", false
	}
	for k := range m {
		switch k {
		case "$date", "$uuid", "$objectId", "$binary":
			return k, true
		}
	}
	return "", false
}

type numVal struct {
	isInt bool
	i     int64
	f     float64
}

func parseNum(n json.Number) numVal {
	if i, err := strconv.ParseInt(string(n), 10, 64); err == nil {
		return numVal{isInt: true, i: i, f: float64(i)}
	}
	f, _ := strconv.ParseFloat(string(n), 64)
	return numVal{f: f}
}

func cmpNum(a, b json.Number) int {
	x, y := parseNum(a), parseNum(b)
	if x.isInt && y.isInt {
		switch {
		case x.i < y.i:
			return -1
		case x.i > y.i:
			return 1
		}
		return 0
	}
	switch {
	case x.f < y.f:
		return -1
	case x.f > y.f:
		return 1
	}
	return 0
}

func numFrom(v numVal) json.Number {
	if v.isInt {
		return json.Number(strconv.FormatInt(v.i, 10))
	}
	if v.f == math.Trunc(v.f) && math.Abs(v.f) < 1e15 {
		return json.Number(strconv.FormatInt(int64(v.f), 10))
	}
	return json.Number(strconv.FormatFloat(v.f, 'g', -1, 64))
}

// arith applies op to two numbers, staying integral while both are integers and the
// result does not overflow.
func arith(a, b json.Number, op byte) json.Number {
	x, y := parseNum(a), parseNum(b)
	if x.isInt && y.isInt {
		switch op {
		case '+':
			if s := x.i + y.i; (s > x.i) == (y.i > 0) {
				return numFrom(numVal{isInt: true, i: s})
			}
		case '*':
			if x.i == 0 || y.i == 0 {
				return "0"
			}
			if p := x.i * y.i; p/y.i == x.i && !(x.i == -1 && y.i == math.MinInt64) && !(y.i == -1 && x.i == math.MinInt64) {
				return numFrom(numVal{isInt: true, i: p})
			}
		}
	}
	if op == '+' {
		return numFrom(numVal{f: x.f + y.f})
	}
	return numFrom(numVal{f: x.f * y.f})
}

func canonNum(n json.Number) string { return string(numFrom(parseNum(n))) }

// typeRank orders values of different types for sorting: missing/null < numbers < strings <
// booleans < dates < objects < arrays.
func typeRank(v any) int {
	switch x := v.(type) {
	case nil:
		return 0
	case json.Number:
		return 1
	case string:
		return 2
	case bool:
		return 3
	case map[string]any:
		if k, ok := ejsonKind(x); ok && k == "$date" {
			return 4
		}
		return 5
	case []any:
		return 6
	}
	return 7
}

// compare orders two values of the same kind (numbers, strings, booleans, dates). ok is false
// when they are not comparable.
func compare(a, b any) (int, bool) {
	switch x := a.(type) {
	case json.Number:
		if y, ok := b.(json.Number); ok {
			return cmpNum(x, y), true
		}
	case string:
		if y, ok := b.(string); ok {
			return strings.Compare(x, y), true
		}
	case bool:
		if y, ok := b.(bool); ok {
			switch {
			case x == y:
				return 0, true
			case !x:
				return -1, true
			}
			return 1, true
		}
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok {
			return 0, false
		}
		kx, okx := ejsonKind(x)
		ky, oky := ejsonKind(y)
		if okx && oky && kx == "$date" && ky == "$date" {
			dx, ok1 := x["$date"].(json.Number)
			dy, ok2 := y["$date"].(json.Number)
			if ok1 && ok2 {
				return cmpNum(dx, dy), true
			}
		}
	}
	return 0, false
}

// sortCompare orders any two values (for sort clauses): by type rank, then by value.
func sortCompare(a, b any) int {
	ra, rb := typeRank(a), typeRank(b)
	if ra != rb {
		return ra - rb
	}
	if c, ok := compare(a, b); ok {
		return c
	}
	return 0
}

// equal is JSON value equality: numbers by value, objects regardless of key order.
func equal(a, b any) bool {
	switch x := a.(type) {
	case nil:
		return b == nil
	case json.Number:
		y, ok := b.(json.Number)
		return ok && cmpNum(x, y) == 0
	case string:
		y, ok := b.(string)
		return ok && x == y
	case bool:
		y, ok := b.(bool)
		return ok && x == y
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !equal(x[i], y[i]) {
				return false
			}
		}
		return true
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || !equal(v, w) {
				return false
			}
		}
		return true
	}
	return false
}

func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = deepCopy(e)
		}
		return m
	case []any:
		a := make([]any, len(x))
		for i, e := range x {
			a[i] = deepCopy(e)
		}
		return a
	}
	return v
}

func splitPath(p string) []string { return strings.Split(p, ".") }

// resolve returns the values at the dotted path: array elements are indexed by a numeric
// segment, and a non-numeric segment fans out over the objects of an array, as the Data
// API's shredder indexes array elements under their array's path.
func resolve(v any, segs []string) (vals []any) {
	if len(segs) == 0 {
		return []any{v}
	}
	switch x := v.(type) {
	case map[string]any:
		if e, ok := x[segs[0]]; ok {
			return resolve(e, segs[1:])
		}
	case []any:
		if i, err := strconv.Atoi(segs[0]); err == nil {
			if i >= 0 && i < len(x) {
				return resolve(x[i], segs[1:])
			}
			return nil
		}
		for _, e := range x {
			if m, ok := e.(map[string]any); ok {
				vals = append(vals, resolve(m, segs)...)
			}
		}
	}
	return vals
}

// first returns the first value at path, for sorting.
func first(doc map[string]any, segs []string) any {
	if vs := resolve(doc, segs); len(vs) > 0 {
		return vs[0]
	}
	return nil
}

// setPath sets doc[path] = val, creating objects on the way. It fails when a step is a
// scalar or an array indexed with a non-number.
func setPath(doc map[string]any, segs []string, val any) bool {
	var cur any = doc
	for i, s := range segs {
		last := i == len(segs)-1
		switch x := cur.(type) {
		case map[string]any:
			if last {
				x[s] = val
				return true
			}
			next, ok := x[s]
			if !ok || next == nil {
				next = map[string]any{}
				x[s] = next
			}
			cur = next
		case []any:
			idx, err := strconv.Atoi(s)
			if err != nil || idx < 0 || idx >= len(x) {
				return false // growing arrays through paths is not modelled
			}
			if last {
				x[idx] = val
				return true
			}
			cur = x[idx]
		default:
			return false
		}
	}
	return false
}

// getPath returns the single value at path (no fan-out) and whether it exists.
func getPath(doc map[string]any, segs []string) (any, bool) {
	var cur any = doc
	for _, s := range segs {
		switch x := cur.(type) {
		case map[string]any:
			v, ok := x[s]
			if !ok {
				return nil, false
			}
			cur = v
		case []any:
			idx, err := strconv.Atoi(s)
			if err != nil || idx < 0 || idx >= len(x) {
				return nil, false
			}
			cur = x[idx]
		default:
			return nil, false
		}
	}
	return cur, true
}

func unsetPath(doc map[string]any, segs []string) bool {
	if len(segs) == 1 {
		_, ok := doc[segs[0]]
		delete(doc, segs[0])
		return ok
	}
	parent, ok := getPath(doc, segs[:len(segs)-1])
	if !ok {
		return false
	}
	switch x := parent.(type) {
	case map[string]any:
		_, ok := x[segs[len(segs)-1]]
		delete(x, segs[len(segs)-1])
		return ok
	case []any:
		idx, err := strconv.Atoi(segs[len(segs)-1])
		if err == nil && idx >= 0 && idx < len(x) {
			x[idx] = nil // as the Data API does: $unset of an array element sets it to null
			return true
		}
	}
	return false
}

// idKey is the storage key of an _id: its type and text, as the Data API stores (type, text)
// so that "1" and 1 differ and {"$uuid": "x"} and "x" collide (data-api.md §4).
func idKey(v any) (string, *apiError) {
	switch x := v.(type) {
	case string:
		if x == "" {
			return "", errDocIDValue("empty String not allowed")
		}
		return "s" + x, nil
	case json.Number:
		return "n" + canonNum(x), nil
	case bool:
		return "b" + strconv.FormatBool(x), nil
	case nil:
		return "z", nil
	case map[string]any:
		k, ok := ejsonKind(x)
		if ok {
			switch k {
			case "$uuid", "$objectId":
				if s, ok := x[k].(string); ok && s != "" {
					return "s" + s, nil
				}
				return "", errDocIDValue("'" + k + "' value must be a non-empty String")
			case "$date":
				if n, ok := x[k].(json.Number); ok && parseNum(n).isInt {
					return "d" + string(n), nil
				}
				return "", errDocIDValue("'$date' value must be an integer Number (epoch millis)")
			}
		}
		return "", errDocIDType("Document Id must be a JSON String, Number, Boolean, EJSON-Encoded Date Object or NULL instead got Object")
	case []any:
		return "", errDocIDType("Document Id must be a JSON String, Number, Boolean, EJSON-Encoded Date Object or NULL instead got Array")
	}
	return "", errDocIDType("unsupported value")
}

// idText renders an _id for messages: strings quoted, other values as JSON.
func idText(v any) string {
	if s, ok := v.(string); ok {
		return "'" + s + "'"
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// idString is the _id's key in Server.Documents: the string or its JSON text.
func idString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case map[string]any:
		if k, ok := ejsonKind(x); ok {
			if s, ok := x[k].(string); ok {
				return s
			}
		}
	}
	b, _ := json.Marshal(v)
	return string(b)
}
