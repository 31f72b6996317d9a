module pesto/admission

go 1.26
