# nothing but comments

   # here
