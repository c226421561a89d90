"""The synthetic seafloor sample and point survey, so both stages run without photographs."""
