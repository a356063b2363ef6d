package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestEchoHandler(t *testing.T) {
	for _, tc := range []struct {
		mode, want string
	}{
		{"hostname", "np-pods-abc\n"},
		{"ip", "198.18.1.7\n"},
	} {
		h, err := echoHandler(tc.mode, "np-pods-abc")
		if err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest(http.MethodGet, "/anything", nil)
		req.RemoteAddr = "198.18.1.7:40000"
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		body, _ := io.ReadAll(rec.Body)
		if string(body) != tc.want {
			t.Errorf("mode %s: got %q, want %q", tc.mode, body, tc.want)
		}
	}
	if _, err := echoHandler("bogus", "x"); err == nil {
		t.Error("bogus mode accepted")
	}
}

func TestEchoModeForImage(t *testing.T) {
	cases := map[string]string{
		"sysnet4admin/echo-hname":               "hostname",
		"sysnet4admin/echo-ip":                  "ip",
		"docker.io/sysnet4admin/echo-ip:latest": "ip",
		"nginx":                                 "hostname",
	}
	for image, want := range cases {
		if got := echoModeForImage(image); got != want {
			t.Errorf("%s: %s, want %s", image, got, want)
		}
	}
}
