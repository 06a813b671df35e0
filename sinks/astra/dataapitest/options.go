package dataapitest

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
)

func (q *request) obj(field string) (map[string]any, *apiError) {
	v, ok := q.args[field]
	if !ok || v == nil {
		return nil, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, errStructure(fmt.Sprintf("'%s' must be a JSON object, not %s", field, jsonType(v)))
	}
	return m, nil
}

func (q *request) optBool(name string) (bool, *apiError) {
	v, ok := q.opts[name]
	if !ok || v == nil {
		return false, nil
	}
	b, ok := v.(bool)
	if !ok {
		return false, errStructure(fmt.Sprintf("option '%s' must be a boolean, not %s", name, jsonType(v)))
	}
	return b, nil
}

func (q *request) optInt(name string) (int, bool, *apiError) {
	v, ok := q.opts[name]
	if !ok || v == nil {
		return 0, false, nil
	}
	n, ok := v.(json.Number)
	if !ok || !parseNum(n).isInt || parseNum(n).i > math.MaxInt32 {
		return 0, false, errStructure(fmt.Sprintf("option '%s' must be an integer, not %s", name, jsonText(v)))
	}
	return int(parseNum(n).i), true, nil
}

func (q *request) optString(name string) (string, *apiError) {
	v, ok := q.opts[name]
	if !ok || v == nil {
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", errStructure(fmt.Sprintf("option '%s' must be a string, not %s", name, jsonType(v)))
	}
	return s, nil
}

func (q *request) filter() (map[string]any, *apiError) {
	f, err := q.obj("filter")
	if err != nil {
		return nil, err
	}
	if err := q.c.validateFilter(f); err != nil {
		return nil, err
	}
	return f, nil
}

func (q *request) projection() (*projection, *apiError) {
	p, err := q.obj("projection")
	if err != nil {
		return nil, err
	}
	return parseProjection(p)
}

func (q *request) returnAfter() (bool, *apiError) {
	rd, err := q.optString("returnDocument")
	if err != nil {
		return false, err
	}
	switch rd {
	case "", "before":
		return false, nil
	case "after":
		return true, nil
	}
	return false, errFieldValue("options.returnDocument", strconv.Quote(rd), "value must be 'before' or 'after'")
}
