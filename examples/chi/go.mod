module github.com/bgpool/bgpool/examples/chi

go 1.25.0

replace github.com/bgpool/bgpool => ../..

require (
	github.com/bgpool/bgpool v0.0.0-00010101000000-000000000000
	github.com/go-chi/chi/v5 v5.5.0
	github.com/stretchr/testify v1.12.1
	go.uber.org/goleak v1.3.0
)

require (
	github.com/panjf2000/ants/v2 v2.12.1 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/sync v0.11.0 // indirect
	golang.org/x/time v0.15.0 // indirect
)
