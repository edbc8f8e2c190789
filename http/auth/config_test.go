package auth

import (
	"strings"
	"testing"
)

func TestConfigFromEnv(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    Config
		wantErr string
	}{
		{name: "nothing set", env: nil, want: Config{}},
		{name: "disable 1", env: map[string]string{EnvDisable: "1"}, want: Config{Disable: true}},
		{name: "disable true", env: map[string]string{EnvDisable: "true"}, want: Config{Disable: true}},
		{name: "disable YES padded", env: map[string]string{EnvDisable: "  YES \n"}, want: Config{Disable: true}},
		{name: "disable True", env: map[string]string{EnvDisable: "True"}, want: Config{Disable: true}},
		// Upstream treated presence as disable; these must keep auth on.
		{name: "disable 0", env: map[string]string{EnvDisable: "0"}, want: Config{}},
		{name: "disable false", env: map[string]string{EnvDisable: "false"}, want: Config{}},
		{name: "disable no", env: map[string]string{EnvDisable: "no"}, want: Config{}},
		{name: "disable empty", env: map[string]string{EnvDisable: ""}, want: Config{}},
		{name: "disable blank", env: map[string]string{EnvDisable: "  "}, want: Config{}},
		{name: "disable maybe", env: map[string]string{EnvDisable: "maybe"}, wantErr: EnvDisable},
		{name: "disable on", env: map[string]string{EnvDisable: "on"}, wantErr: EnvDisable},
		{
			name: "static token trimmed",
			env:  map[string]string{EnvStaticToken: " s3cret\n"},
			want: Config{StaticToken: "s3cret"},
		},
		{
			name: "jwt secret verbatim",
			env:  map[string]string{EnvJWTSecret: " key "},
			want: Config{JWTSecret: " key "},
		},
		{
			name: "all three",
			env:  map[string]string{EnvDisable: "yes", EnvStaticToken: "tok", EnvJWTSecret: "key"},
			want: Config{Disable: true, StaticToken: "tok", JWTSecret: "key"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ConfigFromEnv(func(k string) string { return tt.env[k] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ConfigFromEnv error = %v, want one naming %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ConfigFromEnv: %v", err)
			}
			if got != tt.want {
				t.Fatalf("ConfigFromEnv = %+v, want %+v", got, tt.want)
			}
		})
	}
}
