module pesto/deploy

go 1.26

require pesto/shared v0.0.0

require (
	github.com/compose-spec/compose-go/v2 v2.16.2 // indirect
	go.yaml.in/yaml/v4 v4.0.0-rc.4 // indirect
)

replace pesto/shared => ../shared
