package httpapi

import (
	"fmt"
	"net/http"
	"unicode"
)

// envParam returns the "env" query parameter, "dev" when absent, or an error for anything other
// than dev, test or prod.
func envParam(r *http.Request) (string, error) {
	env := r.URL.Query().Get("env")
	switch env {
	case "":
		return "dev", nil
	case "dev", "test", "prod":
		return env, nil
	}
	return "", fmt.Errorf("env %q is not one of dev, test, prod", env)
}

func containsControl(s string) bool {
	for _, c := range s {
		if unicode.IsControl(c) {
			return true
		}
	}
	return false
}
