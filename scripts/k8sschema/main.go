// Command k8sschema writes the JSON schemas kubeconform validates against,
// offline, from OpenAPI documents that Go modules ship: the Kubernetes
// swagger.json (k8s.io/kubectl testdata/openapi) for the built-in kinds, and
// CustomResourceDefinition YAML files (the Prometheus Operator's
// example/prometheus-operator-crd) for CRD kinds. scripts/check-helm.sh runs
// it. Files are named as kubeconform's -schema-location template
// "{{ .ResourceKind }}{{ .KindSuffix }}.json" expects (daemonset-apps-v1.json,
// service-v1.json, servicemonitor-monitoring-v1.json).
//
// Schemas are strict, like kubeconform's own "-strict" set: objects with
// listed properties reject unknown ones (so a misspelt field fails),
// except where Kubernetes preserves unknown fields. int-or-string and
// quantities accept both forms, as the API server does.
//
//	go run ./scripts/k8sschema -swagger swagger.json -crd a.yaml -crd b.yaml -out DIR
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"
)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(s string) error { *m = append(*m, s); return nil }

func main() {
	swagger := flag.String("swagger", "", "Kubernetes OpenAPI v2 document (swagger.json)")
	var crds multi
	flag.Var(&crds, "crd", "CustomResourceDefinition YAML file (repeatable)")
	out := flag.String("out", "", "output directory")
	flag.Parse()
	if *out == "" || (*swagger == "" && len(crds) == 0) {
		flag.Usage()
		os.Exit(2)
	}
	n, err := run(*swagger, crds, *out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "k8sschema:", err)
		os.Exit(1)
	}
	fmt.Printf("k8sschema: %d schemas in %s\n", n, *out)
}

func run(swagger string, crds []string, out string) (int, error) {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return 0, err
	}
	n := 0
	if swagger != "" {
		k, err := fromSwagger(swagger, out)
		if err != nil {
			return n, fmt.Errorf("%s: %w", swagger, err)
		}
		n += k
	}
	for _, c := range crds {
		k, err := fromCRD(c, out)
		if err != nil {
			return n, fmt.Errorf("%s: %w", c, err)
		}
		n += k
	}
	return n, nil
}

// fileName is kubeconform's name for the schema of kind in group/version.
func fileName(kind, group, version string) string {
	suffix := ""
	if group != "" {
		suffix = "-" + strings.ToLower(strings.Split(group, ".")[0])
	}
	return strings.ToLower(kind) + suffix + "-" + strings.ToLower(version) + ".json"
}

func fromSwagger(path, out string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	var doc struct {
		Definitions map[string]map[string]any `json:"definitions"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return 0, err
	}
	if len(doc.Definitions) == 0 {
		return 0, errors.New("no definitions")
	}
	defs := map[string]any{}
	for name, d := range doc.Definitions {
		switch {
		case strings.HasSuffix(name, ".util.intstr.IntOrString"):
			defs[name] = intOrString()
		case strings.HasSuffix(name, ".api.resource.Quantity"):
			defs[name] = map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "number"}}}
		default:
			defs[name] = strict(d)
		}
	}
	n := 0
	for name, d := range doc.Definitions {
		gvks, _ := d["x-kubernetes-group-version-kind"].([]any)
		for _, g := range gvks {
			gvk, _ := g.(map[string]any)
			kind, _ := gvk["kind"].(string)
			group, _ := gvk["group"].(string)
			version, _ := gvk["version"].(string)
			if kind == "" || version == "" {
				continue
			}
			// The root is the kind itself, with only the definitions it
			// reaches, so each file stands alone.
			used := map[string]any{}
			closure(defs, name, used)
			root := map[string]any{"$ref": "#/definitions/" + name, "definitions": used}
			if err := writeJSON(filepath.Join(out, fileName(kind, group, version)), root); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

// closure adds def name and every definition it refers to.
func closure(defs map[string]any, name string, used map[string]any) {
	if _, ok := used[name]; ok {
		return
	}
	d, ok := defs[name]
	if !ok {
		return
	}
	used[name] = d
	walk(d, func(m map[string]any) {
		if r, ok := m["$ref"].(string); ok {
			closure(defs, strings.TrimPrefix(r, "#/definitions/"), used)
		}
	})
}

func walk(v any, f func(map[string]any)) {
	switch v := v.(type) {
	case map[string]any:
		f(v)
		for _, c := range v {
			walk(c, f)
		}
	case []any:
		for _, c := range v {
			walk(c, f)
		}
	}
}

func intOrString() map[string]any {
	return map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}}
}

// strict returns a copy of an OpenAPI schema where objects with properties
// allow no others (unless Kubernetes preserves unknown fields there) and
// int-or-string fields accept both.
func strict(v any) any {
	switch v := v.(type) {
	case map[string]any:
		if v["x-kubernetes-int-or-string"] == true || v["format"] == "int-or-string" {
			return intOrString()
		}
		m := make(map[string]any, len(v)+1)
		for k, c := range v {
			switch k {
			case "properties", "patternProperties", "definitions":
				// Maps of names to schemas: the names are not keywords.
				props := map[string]any{}
				for pk, pv := range c.(map[string]any) {
					props[pk] = strict(pv)
				}
				m[k] = props
			default:
				m[k] = strict(c)
			}
		}
		if _, ok := v["properties"]; ok {
			if _, has := v["additionalProperties"]; !has && v["x-kubernetes-preserve-unknown-fields"] != true {
				m["additionalProperties"] = false
			}
		}
		return m
	case []any:
		out := make([]any, len(v))
		for i, c := range v {
			out[i] = strict(c)
		}
		return out
	}
	return v
}

func fromCRD(path, out string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	var crd struct {
		Spec struct {
			Group    string
			Names    struct{ Kind string }
			Versions []struct {
				Name   string
				Schema struct {
					OpenAPIV3Schema map[string]any `yaml:"openAPIV3Schema"`
				}
			}
		}
	}
	if err := yaml.Unmarshal(b, &crd); err != nil {
		return 0, err
	}
	if crd.Spec.Names.Kind == "" || crd.Spec.Group == "" {
		return 0, errors.New("not a CustomResourceDefinition")
	}
	n := 0
	for _, v := range crd.Spec.Versions {
		if v.Schema.OpenAPIV3Schema == nil {
			continue
		}
		s := strict(v.Schema.OpenAPIV3Schema).(map[string]any)
		if err := writeJSON(filepath.Join(out, fileName(crd.Spec.Names.Kind, crd.Spec.Group, v.Name)), s); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}
