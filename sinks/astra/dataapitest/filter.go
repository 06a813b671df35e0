package dataapitest

import (
	"encoding/json"
	"strings"
)

// isOperatorObject reports whether v is an operator expression ({"$gt": 1, …}) rather than a
// literal value. EJSON wrappers ({"$date": …}) are literals.
func isOperatorObject(v any) (map[string]any, bool) {
	m, ok := v.(map[string]any)
	if !ok || len(m) == 0 {
		return nil, false
	}
	if _, ej := ejsonKind(m); ej {
		return nil, false
	}
	for k := range m {
		if !strings.HasPrefix(k, "$") {
			return nil, false
		}
	}
	return m, true
}

// validateFilter checks a filter clause the way the server's FilterClauseBuilder does: known
// operators, operand types, $in size, indexed paths and the expression count.
func (c *collection) validateFilter(f map[string]any) *apiError {
	n := 0
	if err := c.validateFilterObj(f, &n, false); err != nil {
		return err
	}
	if n > maxFilterExprs {
		return errFilterTooMany(n)
	}
	return nil
}

// validateFilterObj checks one filter object, counting its expressions in n; underOr is
// set inside an $or, where _id is not allowed.
func (c *collection) validateFilterObj(f map[string]any, n *int, underOr bool) *apiError {
	for k, v := range f {
		var err *apiError
		switch k {
		case "$and", "$or":
			arr, ok := v.([]any)
			if !ok || len(arr) == 0 {
				return errFilter("'%s' operator must have at least one expression in an Array", k)
			}
			for _, e := range arr {
				m, ok := e.(map[string]any)
				if !ok {
					return errFilter("'%s' operator must have an Array of Objects", k)
				}
				if err := c.validateFilterObj(m, n, underOr || k == "$or"); err != nil {
					return err
				}
			}
		case "$not":
			m, ok := v.(map[string]any)
			if !ok {
				return errFilter("'$not' operator must have an Object value")
			}
			err = c.validateFilterObj(m, n, underOr)
		default:
			err = c.validateFilterPath(k, v, n, underOr)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// validateFilterPath checks the condition v on the document path k: a literal (implicit
// $eq) or an operator object, counting each as an expression in n.
func (c *collection) validateFilterPath(k string, v any, n *int, underOr bool) *apiError {
	vector := k == "$vector" || k == "$vectorize"
	if strings.HasPrefix(k, "$") && !vector {
		return errFilterOperator(k)
	}
	if k == "" {
		return errFilter("filter path must not be empty")
	}
	if k == "_id" && underOr {
		return errFilter("'_id' is not supported under '$or'")
	}
	if !vector && !c.opts.index.indexed(k) {
		return errFilterUnindexed(k)
	}
	ops, isOps := isOperatorObject(v)
	if !isOps {
		if mv, ok := v.(map[string]any); ok {
			for mk := range mv {
				if strings.HasPrefix(mk, "$") {
					if _, ej := ejsonKind(mv); !ej {
						return errFilter("cannot mix operators and fields in the value of '%s'", k)
					}
				}
			}
		}
		if vector {
			return errFilter("Cannot filter on '%s' field using operator $eq: only $exists is supported", k)
		}
		*n++
		return nil
	}
	for op, arg := range ops {
		*n++
		if vector && op != "$exists" {
			return errFilter("Cannot filter on '%s' field using operator %s: only $exists is supported", k, op)
		}
		if err := validateFilterOperand(op, arg); err != nil {
			return err
		}
	}
	return nil
}

// validateFilterOperand checks that op is a known filter operator and arg an operand of
// the type it takes.
func validateFilterOperand(op string, arg any) *apiError {
	switch op {
	case "$eq", "$ne":
	case "$in", "$nin", "$all":
		arr, ok := arg.([]any)
		if !ok {
			return errFilter("'%s' operator must have `ARRAY` value", op)
		}
		if op != "$all" && len(arr) > maxInValues {
			return errFilter("'%s' operator must have at most %d values", op, maxInValues)
		}
	case "$gt", "$gte", "$lt", "$lte":
		switch x := arg.(type) {
		case json.Number, string, bool:
		case map[string]any:
			if kind, ok := ejsonKind(x); !ok || kind != "$date" {
				return errFilter("%s operator must have `DATE` or `NUMBER` or `TEXT` or `BOOLEAN` value", op)
			}
		default:
			return errFilter("%s operator must have `DATE` or `NUMBER` or `TEXT` or `BOOLEAN` value", op)
		}
	case "$exists":
		if _, ok := arg.(bool); !ok {
			return errFilter("'$exists' operator supports only true/false")
		}
	case "$size":
		num, ok := arg.(json.Number)
		if !ok || !parseNum(num).isInt || parseNum(num).i < 0 {
			return errFilter("$size operator must have integer value >= 0")
		}
	default:
		return errFilterOperator(op)
	}
	return nil
}

// matches reports whether doc satisfies the (validated) filter.
func matches(doc map[string]any, f map[string]any) bool {
	for k, v := range f {
		switch k {
		case "$and":
			for _, e := range v.([]any) {
				if !matches(doc, e.(map[string]any)) {
					return false
				}
			}
			continue
		case "$or":
			any1 := false
			for _, e := range v.([]any) {
				if matches(doc, e.(map[string]any)) {
					any1 = true
					break
				}
			}
			if !any1 {
				return false
			}
			continue
		case "$not":
			if matches(doc, v.(map[string]any)) {
				return false
			}
			continue
		}
		vals := resolve(doc, splitPath(k))
		ops, isOps := isOperatorObject(v)
		if !isOps {
			if !eqMatch(vals, v) {
				return false
			}
			continue
		}
		for op, arg := range ops {
			if !opMatch(vals, op, arg) {
				return false
			}
		}
	}
	return true
}

// eqMatch: a value equals target, or is an array with an element equal to target.
func eqMatch(vals []any, target any) bool {
	for _, v := range vals {
		if equal(v, target) {
			return true
		}
		if arr, ok := v.([]any); ok {
			if _, tArr := target.([]any); !tArr {
				for _, e := range arr {
					if equal(e, target) {
						return true
					}
				}
			}
		}
	}
	return false
}

func opMatch(vals []any, op string, arg any) bool {
	switch op {
	case "$eq":
		return eqMatch(vals, arg)
	case "$ne":
		return !eqMatch(vals, arg)
	case "$in":
		for _, t := range arg.([]any) {
			if eqMatch(vals, t) {
				return true
			}
		}
		return false
	case "$nin":
		for _, t := range arg.([]any) {
			if eqMatch(vals, t) {
				return false
			}
		}
		return true
	case "$exists":
		return (len(vals) > 0) == arg.(bool)
	case "$size":
		want := parseNum(arg.(json.Number)).i
		for _, v := range vals {
			if a, ok := v.([]any); ok && int64(len(a)) == want {
				return true
			}
		}
		return false
	case "$all":
		for _, v := range vals {
			a, ok := v.([]any)
			if !ok {
				continue
			}
			all := true
			for _, t := range arg.([]any) {
				if !eqMatch([]any{a}, t) {
					all = false
					break
				}
			}
			if all {
				return true
			}
		}
		return false
	case "$gt", "$gte", "$lt", "$lte":
		for _, v := range vals {
			cands := []any{v}
			if a, ok := v.([]any); ok {
				cands = a
			}
			for _, e := range cands {
				c, ok := compare(e, arg)
				if !ok {
					continue
				}
				if (op == "$gt" && c > 0) || (op == "$gte" && c >= 0) || (op == "$lt" && c < 0) || (op == "$lte" && c <= 0) {
					return true
				}
			}
		}
		return false
	}
	return false
}

// idLookup returns the _id values a filter pins to, when the filter is exactly
// {"_id": v} or {"_id": {"$eq": v}} or {"_id": {"$in": [...]}}; ok is false otherwise.
func idLookup(f map[string]any) ([]any, bool) {
	if len(f) != 1 {
		return nil, false
	}
	v, has := f["_id"]
	if !has {
		return nil, false
	}
	ops, isOps := isOperatorObject(v)
	if !isOps {
		return []any{v}, true
	}
	if len(ops) != 1 {
		return nil, false
	}
	if e, ok := ops["$eq"]; ok {
		return []any{e}, true
	}
	if in, ok := ops["$in"].([]any); ok {
		return in, true
	}
	return nil, false
}

// upsertSeed builds the document an upsert starts from: the filter's equality conditions
// (implicit or $eq, also inside $and).
func upsertSeed(f map[string]any, doc map[string]any) {
	for k, v := range f {
		if k == "$and" {
			for _, e := range v.([]any) {
				upsertSeed(e.(map[string]any), doc)
			}
			continue
		}
		if strings.HasPrefix(k, "$") {
			continue
		}
		if ops, isOps := isOperatorObject(v); isOps {
			if e, ok := ops["$eq"]; ok {
				setPath(doc, splitPath(k), deepCopy(e))
			}
			continue
		}
		setPath(doc, splitPath(k), deepCopy(v))
	}
}
