// kubecheck: strict schema check of rendered Kubernetes manifests, offline.
//
// Reads multi-document YAML (the output of `helm template`) on stdin and decodes every
// document into its typed Kubernetes API object with strict decoding: an unknown or
// duplicated field, a wrong type or an unknown apiVersion/kind of a built-in API group is
// an error. Kinds of other groups (CRDs such as monitoring.coreos.com ServiceMonitor) are
// listed as skipped. This is what kubeconform checks, from the API types themselves, so no
// JSON schemas need downloading. Exit 1 if any document fails.
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
}

func main() {
	codecs := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict)
	decoder := codecs.UniversalDeserializer()
	reader := utilyaml.NewYAMLReader(bufio.NewReader(os.Stdin))
	failed, checked, skipped := 0, 0, 0
	for {
		doc, err := reader.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "read: %v\n", err)
			os.Exit(1)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		var meta typeMeta
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			fmt.Printf("FAIL (not YAML): %v\n", err)
			failed++
			continue
		}
		name := fmt.Sprintf("%s %s/%s", meta.APIVersion, meta.Kind, meta.Metadata.Name)
		group := strings.SplitN(meta.APIVersion, "/", 2)[0]
		if strings.Contains(group, ".") && !strings.HasSuffix(group, ".k8s.io") {
			fmt.Printf("skipped (custom resource): %s\n", name)
			skipped++
			continue
		}
		if _, _, err := decoder.Decode(doc, nil, nil); err != nil {
			fmt.Printf("FAIL %s: %v\n", name, err)
			failed++
			continue
		}
		fmt.Printf("ok %s\n", name)
		checked++
	}
	fmt.Printf("%d valid, %d invalid, %d skipped\n", checked, failed, skipped)
	if failed > 0 || checked == 0 {
		os.Exit(1)
	}
}

func stripComments(doc []byte) []byte {
	var out bytes.Buffer
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out.Write(line)
			out.WriteByte('\n')
		}
	}
	return out.Bytes()
}
