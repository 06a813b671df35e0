package dataapitest

import (
	"encoding/json"
	"math"
)

func (c *collection) similarity(doc map[string]any, q []float64) (float64, bool) {
	arr, ok := doc["$vector"].([]any)
	if !ok || len(arr) != len(q) {
		return 0, false
	}
	var dot, na, nb, d2 float64
	for i, e := range arr {
		x := parseNum(e.(json.Number)).f
		dot += x * q[i]
		na += x * x
		nb += q[i] * q[i]
		d2 += (x - q[i]) * (x - q[i])
	}
	switch c.opts.metric {
	case "dot_product":
		return (1 + dot) / 2, true
	case "euclidean":
		return 1 / (1 + d2), true
	}
	if na == 0 || nb == 0 {
		return 0, true
	}
	return (1 + dot/math.Sqrt(na*nb)) / 2, true
}
