"""Sample reports for ``conveyor demo``: a JUnit XML test report and a Trivy JSON template."""
