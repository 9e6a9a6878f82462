// nothing here

   // still nothing