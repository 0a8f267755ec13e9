package supervisor

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestFromEnv_NoSupervisorOutsideBalena(t *testing.T) {
	env := map[string]string{"BALENA_SUPERVISOR_ADDRESS": "http://127.0.0.1:48484", "BALENA_APP_ID": "1"}
	if c := FromEnv(func(k string) string { return env[k] }); c != nil {
		t.Errorf("a client without an API key: %+v", c)
	}
}

// A refusal is reported with the supervisor's status and message, never
// with the key, even when the supervisor echoes it.
func TestRestartService_AFailureNamesTheServiceNotTheKey(t *testing.T) {
	const key = "k3yThatMustNotLeak"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "service not found (key "+key+")", http.StatusNotFound)
	}))
	defer srv.Close()
	env := map[string]string{"BALENA_SUPERVISOR_ADDRESS": srv.URL + "/", "BALENA_SUPERVISOR_API_KEY": key, "BALENA_APP_ID": "42"}
	err := FromEnv(func(k string) string { return env[k] }).RestartService(context.Background(), "web")
	if err == nil || !strings.Contains(err.Error(), "restart web") || !strings.Contains(err.Error(), "404") || strings.Contains(err.Error(), key) {
		t.Errorf("error %v; want the service and the status, never the key", err)
	}
}
