package apns_test

import (
	"fmt"
	"go/ast"
	"go/parser"
	gotoken "go/token"
	"go/types"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// readmeGoBlocks returns the ```go blocks of README.md, in order.
func readmeGoBlocks(t *testing.T) []string {
	t.Helper()
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	for _, block := range strings.Split(string(readme), "```go\n")[1:] {
		block, _, _ = strings.Cut(block, "```")
		blocks = append(blocks, block)
	}
	return blocks
}

// vetPrograms runs go vet on programs (directory name -> main.go) in a module that requires
// this one, so they build against the code as it is.
func vetPrograms(t *testing.T, programs map[string]string) {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH")
	}
	repo, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	goMod := "module readme\n\ngo 1.26\n\nrequire github.com/Kwik-messenger/apns-go v0.0.0\n\n" +
		"replace github.com/Kwik-messenger/apns-go => " + repo + "\n"
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(goMod), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, text := range programs {
		if err := os.MkdirAll(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name, "main.go"), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(goTool, "vet", "./...")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod", "GOPROXY=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		var src strings.Builder
		for name, text := range programs {
			fmt.Fprintf(&src, "--- %s/main.go:\n%s\n", name, text)
		}
		t.Fatalf("README Go code does not build: %v\n%s\n%s", err, out, src.String())
	}
}

// TestREADMEExampleCompiles builds the Go program in README.md against this module, so the
// corrected 2014 example keeps compiling as the API evolves.
func TestREADMEExampleCompiles(t *testing.T) {
	parallel(t)
	if testing.Short() {
		t.Skip("builds a program")
	}
	i := slices.IndexFunc(readmeGoBlocks(t), func(b string) bool { return strings.HasPrefix(b, "package main") })
	if i < 0 {
		t.Fatal("README.md has no Go block starting with package main")
	}
	vetPrograms(t, map[string]string{"example": readmeGoBlocks(t)[i]})
}

// readmeImports are the packages README snippets may use without importing them.
var readmeImports = map[string]string{
	"apns":     "github.com/Kwik-messenger/apns-go",
	"apnstest": "github.com/Kwik-messenger/apns-go/apnstest",
	"context":  "context",
	"fmt":      "fmt",
	"http":     "net/http",
	"log":      "log",
	"slog":     "log/slog",
	"time":     "time",
}

// readmePlaceholders are the names README snippets may use without declaring them, as the
// text around them explains, with their types.
var readmePlaceholders = map[string]string{
	"client":   "*apns.Client",
	"ctx":      "context.Context",
	"hexToken": "string",
	"keyID":    "string",
	"p8":       "[]byte",
	"teamID":   "string",
}

// TestREADMESnippetsCompile builds every other Go block of README.md: each becomes the body
// of a main function, with the imports it needs and its placeholders (client, hexToken, ...)
// declared, and every variable it declares used once, so what is checked is the snippet's
// own code.
func TestREADMESnippetsCompile(t *testing.T) {
	parallel(t)
	if testing.Short() {
		t.Skip("builds programs")
	}
	programs := map[string]string{}
	for i, block := range readmeGoBlocks(t) {
		if strings.HasPrefix(block, "package ") {
			continue // a whole program: TestREADMEExampleCompiles
		}
		prog, err := snippetProgram(block)
		if err != nil {
			t.Fatalf("README Go block %d: %v\n%s", i+1, err, block)
		}
		programs[fmt.Sprintf("snippet%d", i+1)] = prog
	}
	if len(programs) == 0 {
		t.Fatal("README.md has no Go snippets")
	}
	vetPrograms(t, programs)
}

// snippetProgram turns a snippet of statements into a program.
func snippetProgram(block string) (string, error) {
	fset := gotoken.NewFileSet()
	f, err := parser.ParseFile(fset, "snippet.go", "package main\n\nfunc main() {\n"+block+"\n}\n", 0)
	if err != nil {
		return "", err
	}
	imports := map[string]bool{}
	var decls []string
	seen := map[string]bool{}
	for _, id := range f.Unresolved {
		name := id.Name
		if seen[name] {
			continue
		}
		seen[name] = true
		switch {
		case readmeImports[name] != "":
			imports[readmeImports[name]] = true
		case readmePlaceholders[name] != "":
			typ := readmePlaceholders[name]
			decls = append(decls, fmt.Sprintf("var %s %s", name, typ))
			if pkg, _, ok := strings.Cut(strings.TrimLeft(typ, "*[]"), "."); ok {
				imports[readmeImports[pkg]] = true
			}
		case types.Universe.Lookup(name) != nil:
		default:
			return "", fmt.Errorf("uses %s, which is neither declared nor a known placeholder or package", name)
		}
	}
	var uses []string // variables the snippet declares, used so that vet judges the rest
	for _, stmt := range f.Decls[0].(*ast.FuncDecl).Body.List {
		if as, ok := stmt.(*ast.AssignStmt); ok && as.Tok == gotoken.DEFINE {
			for _, lhs := range as.Lhs {
				if id, ok := lhs.(*ast.Ident); ok && id.Name != "_" {
					uses = append(uses, "\t_ = "+id.Name)
				}
			}
		}
	}
	var b strings.Builder
	b.WriteString("package main\n\nimport (\n")
	for _, path := range slices.Sorted(maps.Keys(imports)) {
		fmt.Fprintf(&b, "\t%q\n", path)
	}
	b.WriteString(")\n\n")
	for _, d := range decls {
		b.WriteString(d + "\n")
	}
	fmt.Fprintf(&b, "\nfunc main() {\n%s\n%s\n}\n", block, strings.Join(uses, "\n"))
	return b.String(), nil
}
