"""Tables in, checked, as one `StudyData`: reading and validating the cells and documents (`tables`), loading a
run or external files (`load`), every step count of a sweep (`sweep`), the seal check (`sealed`), the arrays the
statistics index (`arrays`)."""
