package pipeline_test

import (
	"testing"

	"github.com/sluice-dev/sluice/pipeline/sign"
)

// testKey is the command signing key the tests' API side and workers share.
func testKey(t testing.TB) *sign.Key {
	t.Helper()
	k, err := sign.NewKey("pipeline-tests-command-key-0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	return k
}
